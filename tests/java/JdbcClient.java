// Drives Basalt through PostgreSQL's JDBC driver (pgjdbc) with its
// defaults: server-side prepared statements from the fifth execution
// (prepareThreshold=5), typed and untyped parameters, batches and
// transactions. Prints "jdbc: all checks passed" or fails with the
// first difference. Run: java -cp postgresql.jar JdbcClient.java PORT
import java.math.BigDecimal;
import java.sql.*;
import java.time.*;
import java.util.*;

public class JdbcClient {
    static void check(boolean ok, String what) {
        if (!ok) throw new AssertionError(what);
    }

    static void eq(Object got, Object want, String what) {
        if (!Objects.equals(got, want))
            throw new AssertionError(what + ": got " + got + ", want " + want);
    }

    public static void main(String[] args) throws Exception {
        String url = "jdbc:postgresql://127.0.0.1:" + args[0] + "/basalt";
        Properties props = new Properties();
        props.setProperty("user", "basalt");
        try (Connection c = DriverManager.getConnection(url, props)) {
            try (Statement s = c.createStatement()) {
                s.execute("CREATE TABLE events (id int PRIMARY KEY, at timestamp, day date, "
                        + "atz timestamptz, note text, amount numeric(10,2), flag boolean, big bigint)");
            }
            insertsRepeatedPastThePrepareThreshold(c);
            datesAndTimestampsRoundTrip(c);
            selectsRepeatedPastThePrepareThreshold(c);
            batchesAndTransactions(c);
            errorsKeepTheConnectionUsable(c);
        }
        System.out.println("jdbc: all checks passed");
    }

    static void insertsRepeatedPastThePrepareThreshold(Connection c) throws SQLException {
        String sql = "INSERT INTO events (id, at, day, atz, note, amount, flag, big) "
                + "VALUES (?, ?, ?, ?, ?, ?, ?, ?)";
        try (PreparedStatement p = c.prepareStatement(sql)) {
            for (int i = 1; i <= 12; i++) {
                p.setInt(1, i);
                p.setTimestamp(2, Timestamp.valueOf(LocalDateTime.of(2024, 1, i, 10, 30, 15)));
                p.setDate(3, java.sql.Date.valueOf(LocalDate.of(2024, 2, i)));
                p.setObject(4, OffsetDateTime.of(2024, 3, i, 8, 0, 0, 0, ZoneOffset.UTC));
                p.setString(5, "note " + i);
                p.setBigDecimal(6, new BigDecimal(i + ".25"));
                p.setBoolean(7, i % 2 == 0);
                p.setLong(8, 10_000_000_000L * i);
                eq(p.executeUpdate(), 1, "insert " + i + " count");
            }
        }
        try (Statement s = c.createStatement();
             ResultSet r = s.executeQuery("SELECT count(*), sum(big) FROM events")) {
            check(r.next(), "count row");
            eq(r.getLong(1), 12L, "rows inserted");
            eq(r.getLong(2), 780_000_000_000L, "sum of big");
        }
    }

    static void datesAndTimestampsRoundTrip(Connection c) throws SQLException {
        try (PreparedStatement p = c.prepareStatement(
                "SELECT at, day, atz, note, amount, flag FROM events WHERE id = ?")) {
            for (int round = 0; round < 7; round++) {
                p.setInt(1, 7);
                try (ResultSet r = p.executeQuery()) {
                    check(r.next(), "row 7");
                    eq(r.getTimestamp(1).toLocalDateTime(), LocalDateTime.of(2024, 1, 7, 10, 30, 15), "at");
                    eq(r.getDate(2).toLocalDate(), LocalDate.of(2024, 2, 7), "day");
                    eq(r.getObject(3, OffsetDateTime.class).toInstant(),
                            Instant.parse("2024-03-07T08:00:00Z"), "atz");
                    eq(r.getString(4), "note 7", "note");
                    eq(r.getBigDecimal(5), new BigDecimal("7.25"), "amount");
                    eq(r.getBoolean(6), false, "flag");
                    check(!r.next(), "one row");
                }
            }
        }
        // A date and a timestamp compared with parameters, as an ORM filters.
        try (PreparedStatement p = c.prepareStatement(
                "SELECT count(*) FROM events WHERE day >= ? AND at < ?")) {
            for (int round = 0; round < 7; round++) {
                p.setDate(1, java.sql.Date.valueOf(LocalDate.of(2024, 2, 5)));
                p.setTimestamp(2, Timestamp.valueOf(LocalDateTime.of(2024, 1, 9, 0, 0)));
                try (ResultSet r = p.executeQuery()) {
                    check(r.next(), "count row");
                    eq(r.getLong(1), 4L, "days 5..8");
                }
            }
        }
    }

    static void selectsRepeatedPastThePrepareThreshold(Connection c) throws SQLException {
        try (PreparedStatement p = c.prepareStatement("SELECT note FROM events WHERE id = ?")) {
            for (int i = 1; i <= 12; i++) {
                p.setInt(1, i);
                try (ResultSet r = p.executeQuery()) {
                    check(r.next(), "row " + i);
                    eq(r.getString(1), "note " + i, "note " + i);
                }
            }
        }
        try (PreparedStatement p = c.prepareStatement(
                "UPDATE events SET big = big + 1 WHERE id = ? RETURNING big")) {
            for (int round = 1; round <= 7; round++) {
                p.setInt(1, 3);
                try (ResultSet r = p.executeQuery()) {
                    check(r.next(), "returning row " + round);
                    eq(r.getLong(1), 30_000_000_000L + round, "returned big");
                }
            }
        }
    }

    static void batchesAndTransactions(Connection c) throws SQLException {
        c.setAutoCommit(false);
        try (PreparedStatement p = c.prepareStatement("INSERT INTO events (id, note) VALUES (?, ?)")) {
            for (int i = 100; i < 150; i++) {
                p.setInt(1, i);
                p.setString(2, "batch " + i);
                p.addBatch();
            }
            int[] counts = p.executeBatch();
            eq(counts.length, 50, "batch size");
        }
        c.rollback();
        try (PreparedStatement p = c.prepareStatement("INSERT INTO events (id, note) VALUES (?, ?)")) {
            for (int i = 200; i < 210; i++) {
                p.setInt(1, i);
                p.setString(2, "kept " + i);
                p.addBatch();
            }
            p.executeBatch();
        }
        c.commit();
        c.setAutoCommit(true);
        try (Statement s = c.createStatement();
             ResultSet r = s.executeQuery("SELECT count(*) FROM events WHERE id >= 100")) {
            check(r.next(), "count row");
            eq(r.getLong(1), 10L, "rolled back batch gone, committed batch kept");
        }
    }

    static void errorsKeepTheConnectionUsable(Connection c) throws SQLException {
        try (PreparedStatement p = c.prepareStatement("INSERT INTO events (id) VALUES (?)")) {
            p.setInt(1, 1);
            p.executeUpdate();
            throw new AssertionError("duplicate key accepted");
        } catch (SQLException e) {
            eq(e.getSQLState(), "23505", "duplicate key SQLSTATE");
        }
        try (Statement s = c.createStatement(); ResultSet r = s.executeQuery("SELECT 1")) {
            check(r.next(), "usable after an error");
        }
    }
}
