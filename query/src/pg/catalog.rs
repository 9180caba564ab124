//! The `pg_catalog` tables and functions Postgres clients query: psql's
//! `\d`, `\dt`, `\dn`, `\l` and tab completion, and drivers looking up
//! type OIDs. Each table is built from the storage catalog when a query
//! reads it, so it always shows the current tables.
//!
//! psql's queries also use Postgres-only syntax (`OPERATOR(pg_catalog.~)`,
//! `COLLATE pg_catalog.default`, `::regclass`, `pg_catalog.`-qualified
//! functions and types); [`rewrite`] turns those into what DataFusion plans.

use std::ops::ControlFlow;
use std::sync::Arc;

use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use async_trait::async_trait;
use basalt_storage::Db;
use datafusion::catalog::SchemaProvider;
use datafusion::common::{Result as DfResult, ScalarValue};
use datafusion::datasource::{MemTable, TableProvider};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature,
    Volatility,
};
use datafusion::sql::sqlparser::ast::{self, BinaryOperator, Expr, ObjectName, ObjectNamePart};

use crate::catalog::{meta_rows, SCHEMA};
use crate::sql::syntax::call;
use crate::types::pgtypes::{self, TYPES};

pub(crate) const PG_CATALOG: &str = "pg_catalog";
const PG_CATALOG_OID: i64 = 11;
const PUBLIC_OID: i64 = 2200;
const INFORMATION_SCHEMA_OID: i64 = 13000;
/// Every object is owned by the one role there is.
const OWNER_OID: i64 = 10;
const OWNER: &str = "basalt";
const DATABASE_OID: i64 = 16384;
/// Table OIDs start here (Postgres' first user OID); a table's primary
/// key index takes the next number.
const FIRST_TABLE_OID: i64 = 16386;
const HEAP_AM: i64 = 2;
const BTREE_AM: i64 = 403;
/// pgvector's access method has no fixed OID; this one is Basalt's.
const HNSW_AM: i64 = 9001;

fn access_method_oid(method: &str) -> i64 {
    match method {
        "hnsw" => HNSW_AM,
        _ => BTREE_AM,
    }
}

/// What `pg_index` and `pg_get_indexdef` say of an index.
struct IndexMeta {
    method: String,
    primary: bool,
    unique: bool,
    /// False while CREATE UNIQUE INDEX is still checking the rows.
    valid: bool,
    /// `WITH (...)` and an operator class, as the definition shows them.
    options: Vec<(String, String)>,
}

/// One relation as `pg_class` lists it.
struct Relation {
    oid: i64,
    namespace: i64,
    schema: String,
    name: String,
    /// Postgres' relkind: `r` table, `v` view, `i` index.
    kind: &'static str,
    columns: Vec<Field>,
    /// Column positions (0-based) of the primary key.
    key: Vec<usize>,
    /// For an index: its table.
    table: Option<i64>,
    /// For a view: its query.
    definition: Option<String>,
    /// For an index: its method and options.
    index: Option<IndexMeta>,
}

/// The catalog at one moment.
struct Snapshot {
    namespaces: Vec<(i64, String)>,
    relations: Vec<Relation>,
}

fn namespace_oid(name: &str) -> i64 {
    match name {
        PG_CATALOG => PG_CATALOG_OID,
        SCHEMA => PUBLIC_OID,
        "information_schema" => INFORMATION_SCHEMA_OID,
        other => 1_000_000 + stable_hash(other) % 1_000_000_000,
    }
}

/// FNV-1a: the same name gets the same OID in every session and run.
fn stable_hash(text: &str) -> i64 {
    let hash = text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    i64::try_from(hash >> 33).unwrap_or(0)
}

impl Snapshot {
    fn take(db: &Db) -> Snapshot {
        let mut namespaces: Vec<(i64, String)> = [PG_CATALOG, SCHEMA, "information_schema"]
            .into_iter()
            .map(|n| (namespace_oid(n), n.to_string()))
            .collect();
        for schema in meta_rows(db, "schema").unwrap_or_default() {
            namespaces.push((namespace_oid(&schema.name), schema.name));
        }
        let mut relations = Vec::new();
        for def in db.tables() {
            let (schema, name) = crate::catalog::split_storage_name(&def.name);
            let (schema, name) = (schema.to_string(), name.to_string());
            if name.starts_with("__basalt") {
                continue;
            }
            let oid = FIRST_TABLE_OID + 2 * i64::from(def.id);
            let key: Vec<usize> = def.key_columns.iter().map(|&k| k as usize).collect();
            if !key.is_empty() {
                relations.push(Relation {
                    oid: oid + 1,
                    namespace: namespace_oid(&schema),
                    schema: schema.clone(),
                    name: format!("{name}_pkey"),
                    kind: "i",
                    columns: key
                        .iter()
                        .filter_map(|&k| def.schema.fields().get(k))
                        .map(|f| f.as_ref().clone())
                        .collect(),
                    key: key.clone(),
                    table: Some(oid),
                    definition: None,
                    index: Some(IndexMeta {
                        method: "btree".into(),
                        primary: true,
                        unique: true,
                        valid: true,
                        options: Vec::new(),
                    }),
                });
            }
            for index in &def.indexes {
                relations.push(Relation {
                    oid: 1_500_000_000
                        + stable_hash(&format!("{oid}/{}", index.id)) % 1_000_000_000,
                    namespace: namespace_oid(&schema),
                    schema: schema.clone(),
                    name: index.name.clone(),
                    kind: "i",
                    columns: index
                        .columns
                        .iter()
                        .filter_map(|&c| def.schema.fields().get(c as usize))
                        .map(|f| f.as_ref().clone())
                        .collect(),
                    key: index.columns.iter().map(|&c| c as usize).collect(),
                    table: Some(oid),
                    definition: None,
                    index: Some(IndexMeta {
                        method: index.kind.clone(),
                        primary: false,
                        unique: basalt_storage::is_unique_index(index),
                        valid: !basalt_storage::is_building_index(index),
                        options: basalt_storage::declared_options(index),
                    }),
                });
            }
            relations.push(Relation {
                oid,
                namespace: namespace_oid(&schema),
                schema,
                name,
                kind: "r",
                columns: def
                    .schema
                    .fields()
                    .iter()
                    .map(|f| f.as_ref().clone())
                    .collect(),
                key,
                table: None,
                definition: None,
                index: None,
            });
        }
        for view in meta_rows(db, "view").unwrap_or_default() {
            relations.push(Relation {
                oid: 500_000_000
                    + stable_hash(&format!("{}.{}", view.schema, view.name)) % 500_000_000,
                namespace: namespace_oid(&view.schema),
                schema: view.schema,
                name: view.name,
                kind: "v",
                columns: Vec::new(),
                key: Vec::new(),
                table: None,
                definition: view.definition,
                index: None,
            });
        }
        relations.sort_by_key(|r| r.oid);
        Snapshot {
            namespaces,
            relations,
        }
    }

    fn relation(&self, oid: i64) -> Option<&Relation> {
        self.relations.iter().find(|r| r.oid == oid)
    }

    /// `CREATE UNIQUE INDEX t_pkey ON public.t USING btree (id)`, as
    /// PostgreSQL (and pgvector, for hnsw) print it.
    fn index_definition(&self, oid: i64) -> Option<String> {
        let index = self.relation(oid)?;
        let table = self.relation(index.table?)?;
        let meta = index.index.as_ref()?;
        let unique = if meta.unique { "UNIQUE " } else { "" };
        let shown = crate::index::shown_options(&meta.method, &meta.options);
        let columns = match shown.column_suffix {
            Some(suffix) => format!("{} {suffix}", column_list(index)),
            None => column_list(index),
        };
        let with: Vec<String> = shown
            .with
            .iter()
            .map(|(key, value)| format!("{key}='{value}'"))
            .collect();
        let with = if with.is_empty() {
            String::new()
        } else {
            format!(" WITH ({})", with.join(", "))
        };
        Some(format!(
            "CREATE {unique}INDEX {} ON {}.{} USING {} ({columns}){with}",
            index.name, table.schema, table.name, meta.method,
        ))
    }

    fn constraint_definition(&self, oid: i64) -> Option<String> {
        let index = self.relation(oid)?;
        index.table?;
        Some(format!("PRIMARY KEY ({})", column_list(index)))
    }
}

fn column_list(index: &Relation) -> String {
    index
        .columns
        .iter()
        .map(|f| f.name().as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

// ---- the tables ---------------------------------------------------------

/// A column type that stands for [`text_list`] in the layouts below.
const LIST: DataType = DataType::Null;
/// And one for an array of OIDs.
const OID_LIST: DataType = DataType::UInt8;
/// Column types of the catalog tables, short so the layouts read as tables.
const OID: DataType = DataType::Int64;
const TEXT: DataType = DataType::Utf8;
const BOOL: DataType = DataType::Boolean;
const I16: DataType = DataType::Int16;
const I32: DataType = DataType::Int32;
/// Postgres arrays of text (ACLs, options) are always NULL here.
fn text_list() -> DataType {
    DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true)))
}

fn oid(v: i64) -> ScalarValue {
    ScalarValue::Int64(Some(v))
}
fn text(v: impl Into<String>) -> ScalarValue {
    ScalarValue::Utf8(Some(v.into()))
}
fn no_text() -> ScalarValue {
    ScalarValue::Utf8(None)
}
fn no_list() -> ScalarValue {
    ScalarValue::try_from(&text_list()).unwrap_or(ScalarValue::Null)
}
fn boolean(v: bool) -> ScalarValue {
    ScalarValue::Boolean(Some(v))
}
fn int16(v: i64) -> ScalarValue {
    ScalarValue::Int16(Some(i16::try_from(v).unwrap_or(i16::MAX)))
}
fn int32(v: i32) -> ScalarValue {
    ScalarValue::Int32(Some(v))
}

/// The catalog tables: name, columns, and the rows of a snapshot.
type Rows = fn(&Snapshot) -> Vec<Vec<ScalarValue>>;
/// A table's columns: name and type.
type Layout = &'static [(&'static str, DataType)];
const TABLES: &[(&str, Layout, Rows)] = &[
    (
        "pg_namespace",
        &[
            ("oid", OID),
            ("nspname", TEXT),
            ("nspowner", OID),
            ("nspacl", LIST),
        ],
        |s| {
            s.namespaces
                .iter()
                .map(|(o, n)| vec![oid(*o), text(n), oid(OWNER_OID), no_list()])
                .collect()
        },
    ),
    ("pg_class", PG_CLASS, class_rows),
    ("pg_attribute", PG_ATTRIBUTE, attribute_rows),
    ("pg_type", PG_TYPE, type_rows),
    ("pg_index", PG_INDEX, index_rows),
    (
        "pg_indexes",
        &[
            ("schemaname", TEXT),
            ("tablename", TEXT),
            ("indexname", TEXT),
            ("tablespace", TEXT),
            ("indexdef", TEXT),
        ],
        |s| {
            indexes(s)
                .filter_map(|(index, table)| {
                    let table = s.relation(table)?;
                    Some(vec![
                        text(&table.schema),
                        text(&table.name),
                        text(&index.name),
                        no_text(),
                        text(s.index_definition(index.oid)?),
                    ])
                })
                .collect()
        },
    ),
    ("pg_constraint", PG_CONSTRAINT, constraint_rows),
    (
        "pg_attrdef",
        &[
            ("oid", OID),
            ("adrelid", OID),
            ("adnum", I16),
            ("adbin", TEXT),
        ],
        attrdef_rows,
    ),
    ("pg_database", PG_DATABASE, |_| {
        vec![vec![
            oid(DATABASE_OID),
            text("basalt"),
            oid(OWNER_OID),
            int32(6),
            text("c"),
            boolean(false),
            boolean(true),
            int32(-1),
            oid(0),
            text("C.UTF-8"),
            text("C.UTF-8"),
            no_text(),
            no_text(),
            no_list(),
        ]]
    }),
    ("pg_roles", PG_ROLES, |_| {
        vec![vec![
            oid(OWNER_OID),
            text(OWNER),
            boolean(true),
            boolean(true),
            boolean(true),
            boolean(true),
            boolean(true),
            boolean(false),
            boolean(true),
            int32(-1),
            text("********"),
            no_text(),
            no_text(),
        ]]
    }),
    (
        "pg_user",
        &[
            ("usename", TEXT),
            ("usesysid", OID),
            ("usecreatedb", BOOL),
            ("usesuper", BOOL),
            ("userepl", BOOL),
            ("usebypassrls", BOOL),
            ("passwd", TEXT),
            ("valuntil", TEXT),
            ("useconfig", TEXT),
        ],
        |_| {
            vec![vec![
                text(OWNER),
                oid(OWNER_OID),
                boolean(true),
                boolean(true),
                boolean(false),
                boolean(true),
                text("********"),
                no_text(),
                no_text(),
            ]]
        },
    ),
    (
        "pg_am",
        &[
            ("oid", OID),
            ("amname", TEXT),
            ("amhandler", TEXT),
            ("amtype", TEXT),
        ],
        |_| {
            vec![
                vec![
                    oid(HEAP_AM),
                    text("heap"),
                    text("heap_tableam_handler"),
                    text("t"),
                ],
                vec![oid(BTREE_AM), text("btree"), text("bthandler"), text("i")],
                vec![oid(HNSW_AM), text("hnsw"), text("hnswhandler"), text("i")],
            ]
        },
    ),
    (
        "pg_description",
        &[
            ("objoid", OID),
            ("classoid", OID),
            ("objsubid", I32),
            ("description", TEXT),
        ],
        no_rows,
    ),
    (
        "pg_inherits",
        &[
            ("inhrelid", OID),
            ("inhparent", OID),
            ("inhseqno", I32),
            ("inhdetachpending", BOOL),
        ],
        no_rows,
    ),
    (
        "pg_trigger",
        &[
            ("oid", OID),
            ("tgrelid", OID),
            ("tgparentid", OID),
            ("tgname", TEXT),
            ("tgfoid", OID),
            ("tgtype", I16),
            ("tgenabled", TEXT),
            ("tgisinternal", BOOL),
            ("tgconstrrelid", OID),
            ("tgconstrindid", OID),
            ("tgconstraint", OID),
            ("tgdeferrable", BOOL),
            ("tginitdeferred", BOOL),
            ("tgnargs", I16),
        ],
        no_rows,
    ),
    (
        "pg_policy",
        &[
            ("oid", OID),
            ("polname", TEXT),
            ("polrelid", OID),
            ("polcmd", TEXT),
            ("polpermissive", BOOL),
            ("polroles", OID_LIST),
            ("polqual", TEXT),
            ("polwithcheck", TEXT),
        ],
        no_rows,
    ),
    (
        "pg_statistic_ext",
        &[
            ("oid", OID),
            ("stxrelid", OID),
            ("stxname", TEXT),
            ("stxnamespace", OID),
            ("stxowner", OID),
            ("stxstattarget", I32),
            ("stxkeys", TEXT),
            ("stxkind", LIST),
        ],
        no_rows,
    ),
    (
        "pg_publication",
        &[
            ("oid", OID),
            ("pubname", TEXT),
            ("pubowner", OID),
            ("puballtables", BOOL),
            ("pubinsert", BOOL),
            ("pubupdate", BOOL),
            ("pubdelete", BOOL),
            ("pubtruncate", BOOL),
            ("pubviaroot", BOOL),
        ],
        no_rows,
    ),
    (
        "pg_publication_rel",
        &[
            ("oid", OID),
            ("prpubid", OID),
            ("prrelid", OID),
            ("prqual", TEXT),
            ("prattrs", TEXT),
        ],
        no_rows,
    ),
    (
        "pg_publication_namespace",
        &[("oid", OID), ("pnpubid", OID), ("pnnspid", OID)],
        no_rows,
    ),
    (
        "pg_partitioned_table",
        &[("partrelid", OID), ("partstrat", TEXT), ("partnatts", I16)],
        no_rows,
    ),
    (
        "pg_foreign_table",
        &[("ftrelid", OID), ("ftserver", OID), ("ftoptions", TEXT)],
        no_rows,
    ),
    (
        "pg_auth_members",
        &[
            ("oid", OID),
            ("roleid", OID),
            ("member", OID),
            ("grantor", OID),
            ("admin_option", BOOL),
        ],
        no_rows,
    ),
    (
        "pg_proc",
        &[
            ("oid", OID),
            ("proname", TEXT),
            ("pronamespace", OID),
            ("proowner", OID),
            ("prokind", TEXT),
            ("prorettype", OID),
            ("proargtypes", TEXT),
            ("prosrc", TEXT),
        ],
        no_rows,
    ),
    (
        "pg_tablespace",
        &[("oid", OID), ("spcname", TEXT), ("spcowner", OID)],
        |_| {
            vec![
                vec![oid(1663), text("pg_default"), oid(OWNER_OID)],
                vec![oid(1664), text("pg_global"), oid(OWNER_OID)],
            ]
        },
    ),
    (
        "pg_collation",
        &[
            ("oid", OID),
            ("collname", TEXT),
            ("collnamespace", OID),
            ("collprovider", TEXT),
        ],
        |_| {
            vec![vec![
                oid(100),
                text("default"),
                oid(PG_CATALOG_OID),
                text("d"),
            ]]
        },
    ),
    (
        "pg_extension",
        &[
            ("oid", OID),
            ("extname", TEXT),
            ("extowner", OID),
            ("extnamespace", OID),
            ("extversion", TEXT),
        ],
        |_| {
            vec![vec![
                oid(13500),
                text("plpgsql"),
                oid(OWNER_OID),
                oid(PG_CATALOG_OID),
                text("1.0"),
            ]]
        },
    ),
];

fn no_rows(_: &Snapshot) -> Vec<Vec<ScalarValue>> {
    Vec::new()
}

const PG_CLASS: &[(&str, DataType)] = &[
    ("oid", OID),
    ("relname", TEXT),
    ("relnamespace", OID),
    ("reltype", OID),
    ("reloftype", OID),
    ("relowner", OID),
    ("relam", OID),
    ("relfilenode", OID),
    ("reltablespace", OID),
    ("relpages", I32),
    ("reltuples", DataType::Float32),
    ("relallvisible", I32),
    ("reltoastrelid", OID),
    ("relhasindex", BOOL),
    ("relisshared", BOOL),
    ("relpersistence", TEXT),
    ("relkind", TEXT),
    ("relnatts", I16),
    ("relchecks", I16),
    ("relhasrules", BOOL),
    ("relhastriggers", BOOL),
    ("relhassubclass", BOOL),
    ("relrowsecurity", BOOL),
    ("relforcerowsecurity", BOOL),
    ("relispopulated", BOOL),
    ("relreplident", TEXT),
    ("relispartition", BOOL),
    ("relrewrite", OID),
    ("relacl", LIST),
    ("reloptions", LIST),
    ("relpartbound", TEXT),
];

fn class_rows(s: &Snapshot) -> Vec<Vec<ScalarValue>> {
    s.relations
        .iter()
        .map(|r| {
            let am = match (r.kind, &r.index) {
                ("r", _) => HEAP_AM,
                (_, Some(index)) => access_method_oid(&index.method),
                _ => 0,
            };
            vec![
                oid(r.oid),
                text(&r.name),
                oid(r.namespace),
                oid(0),
                oid(0),
                oid(OWNER_OID),
                oid(am),
                oid(r.oid),
                oid(0),
                int32(0),
                ScalarValue::Float32(Some(-1.0)),
                int32(0),
                oid(0),
                boolean(r.kind == "r" && !r.key.is_empty()),
                boolean(false),
                text("p"),
                text(r.kind),
                int16(r.columns.len() as i64),
                int16(0),
                boolean(false),
                boolean(false),
                boolean(false),
                boolean(false),
                boolean(false),
                boolean(true),
                text("d"),
                boolean(false),
                oid(0),
                no_list(),
                no_list(),
                no_text(),
            ]
        })
        .collect()
}

const PG_ATTRIBUTE: &[(&str, DataType)] = &[
    ("attrelid", OID),
    ("attname", TEXT),
    ("atttypid", OID),
    ("attstattarget", I32),
    ("attlen", I16),
    ("attnum", I16),
    ("attndims", I32),
    ("attcacheoff", I32),
    ("atttypmod", I32),
    ("attbyval", BOOL),
    ("attalign", TEXT),
    ("attstorage", TEXT),
    ("attcompression", TEXT),
    ("attnotnull", BOOL),
    ("atthasdef", BOOL),
    ("atthasmissing", BOOL),
    ("attidentity", TEXT),
    ("attgenerated", TEXT),
    ("attisdropped", BOOL),
    ("attislocal", BOOL),
    ("attinhcount", I32),
    ("attcollation", OID),
    ("attacl", TEXT),
    ("attoptions", TEXT),
    ("attfdwoptions", TEXT),
];

fn attribute_rows(s: &Snapshot) -> Vec<Vec<ScalarValue>> {
    let mut rows = Vec::new();
    for r in &s.relations {
        for (i, field) in r.columns.iter().enumerate() {
            let type_oid = pgtypes::type_oid(field);
            let length = TYPES.iter().find(|t| t.0 == type_oid).map_or(-1, |t| t.2);
            let collation = if matches!(type_oid, 25 | 1043) {
                100
            } else {
                0
            };
            rows.push(vec![
                oid(r.oid),
                text(field.name()),
                oid(type_oid),
                int32(-1),
                int16(i64::from(length)),
                int16(i as i64 + 1),
                int32(i32::from(matches!(field.data_type(), DataType::List(_)))),
                int32(-1),
                int32(pgtypes::typmod(field)),
                boolean(length > 0 && length <= 8),
                text("i"),
                text(if length < 0 { "x" } else { "p" }),
                text(""),
                // Postgres never marks a view's columns NOT NULL.
                boolean(!field.is_nullable() && r.kind != "v"),
                boolean(field.metadata().contains_key(crate::catalog::DEFAULT_KEY)),
                boolean(false),
                text(""),
                text(""),
                boolean(false),
                boolean(true),
                int32(0),
                oid(collation),
                no_text(),
                no_text(),
                no_text(),
            ]);
        }
    }
    rows
}

const PG_TYPE: &[(&str, DataType)] = &[
    ("oid", OID),
    ("typname", TEXT),
    ("typnamespace", OID),
    ("typowner", OID),
    ("typlen", I16),
    ("typbyval", BOOL),
    ("typtype", TEXT),
    ("typcategory", TEXT),
    ("typispreferred", BOOL),
    ("typisdefined", BOOL),
    ("typdelim", TEXT),
    ("typrelid", OID),
    ("typelem", OID),
    ("typarray", OID),
    ("typinput", TEXT),
    ("typoutput", TEXT),
    ("typreceive", TEXT),
    ("typsend", TEXT),
    ("typnotnull", BOOL),
    ("typbasetype", OID),
    ("typtypmod", I32),
    ("typndims", I32),
    ("typcollation", OID),
    ("typdefault", TEXT),
];

fn type_rows(_: &Snapshot) -> Vec<Vec<ScalarValue>> {
    let row = |type_oid: i64, name: String, len: i16, category: &str, elem: i64, array: i64| {
        vec![
            oid(type_oid),
            text(&name),
            oid(PG_CATALOG_OID),
            oid(OWNER_OID),
            int16(i64::from(len)),
            boolean(len > 0 && len <= 8),
            text("b"),
            text(category),
            boolean(false),
            boolean(true),
            text(","),
            oid(0),
            oid(elem),
            oid(array),
            text(format!("{name}in")),
            text(format!("{name}out")),
            text(format!("{name}recv")),
            text(format!("{name}send")),
            boolean(false),
            oid(0),
            int32(-1),
            int32(0),
            oid(if category == "S" { 100 } else { 0 }),
            no_text(),
        ]
    };
    TYPES
        .iter()
        .flat_map(|&(type_oid, name, len, array, category)| {
            [
                row(type_oid, name.to_string(), len, category, 0, array),
                row(array, format!("_{name}"), -1, "A", type_oid, 0),
            ]
        })
        .collect()
}

const PG_INDEX: &[(&str, DataType)] = &[
    ("indexrelid", OID),
    ("indrelid", OID),
    ("indnatts", I16),
    ("indnkeyatts", I16),
    ("indisunique", BOOL),
    ("indisprimary", BOOL),
    ("indisexclusion", BOOL),
    ("indimmediate", BOOL),
    ("indisclustered", BOOL),
    ("indisvalid", BOOL),
    ("indcheckxmin", BOOL),
    ("indisready", BOOL),
    ("indislive", BOOL),
    ("indisreplident", BOOL),
    ("indkey", TEXT),
    ("indcollation", TEXT),
    ("indclass", TEXT),
    ("indoption", TEXT),
    ("indexprs", TEXT),
    ("indpred", TEXT),
];

fn index_rows(s: &Snapshot) -> Vec<Vec<ScalarValue>> {
    indexes(s)
        .map(|(index, table)| {
            let keys: Vec<String> = index.key.iter().map(|k| (k + 1).to_string()).collect();
            let width = keys.len() as i64;
            let primary = index.index.as_ref().is_some_and(|m| m.primary);
            let unique = index.index.as_ref().is_some_and(|m| m.unique);
            let valid = index.index.as_ref().is_some_and(|m| m.valid);
            vec![
                oid(index.oid),
                oid(table),
                int16(width),
                int16(width),
                boolean(unique),
                boolean(primary),
                boolean(false),
                boolean(true),
                boolean(false),
                boolean(valid),
                boolean(false),
                boolean(true),
                boolean(true),
                boolean(false),
                text(keys.join(" ")),
                text(vec!["0"; keys.len()].join(" ")),
                text(vec!["0"; keys.len()].join(" ")),
                text(vec!["0"; keys.len()].join(" ")),
                no_text(),
                no_text(),
            ]
        })
        .collect()
}

fn indexes(s: &Snapshot) -> impl Iterator<Item = (&Relation, i64)> {
    s.relations
        .iter()
        .filter_map(|r| r.table.map(|table| (r, table)))
}

const PG_CONSTRAINT: &[(&str, DataType)] = &[
    ("oid", OID),
    ("conname", TEXT),
    ("connamespace", OID),
    ("contype", TEXT),
    ("condeferrable", BOOL),
    ("condeferred", BOOL),
    ("convalidated", BOOL),
    ("conrelid", OID),
    ("contypid", OID),
    ("conindid", OID),
    ("conparentid", OID),
    ("confrelid", OID),
    ("confupdtype", TEXT),
    ("confdeltype", TEXT),
    ("confmatchtype", TEXT),
    ("conislocal", BOOL),
    ("coninhcount", I32),
    ("connoinherit", BOOL),
    ("conkey", TEXT),
    ("confkey", TEXT),
    ("conbin", TEXT),
];

fn constraint_rows(s: &Snapshot) -> Vec<Vec<ScalarValue>> {
    indexes(s)
        .filter(|(index, _)| index.index.as_ref().is_some_and(|m| m.primary))
        .map(|(index, table)| {
            let keys: Vec<String> = index.key.iter().map(|k| (k + 1).to_string()).collect();
            vec![
                oid(index.oid),
                text(&index.name),
                oid(index.namespace),
                text("p"),
                boolean(false),
                boolean(false),
                boolean(true),
                oid(table),
                oid(0),
                oid(index.oid),
                oid(0),
                oid(0),
                text(" "),
                text(" "),
                text(" "),
                boolean(true),
                int32(0),
                boolean(true),
                text(format!("{{{}}}", keys.join(","))),
                no_text(),
                no_text(),
            ]
        })
        .collect()
}

fn attrdef_rows(s: &Snapshot) -> Vec<Vec<ScalarValue>> {
    let mut rows = Vec::new();
    for r in s.relations.iter().filter(|r| r.kind == "r") {
        for (i, field) in r.columns.iter().enumerate() {
            if let Some(default) = field.metadata().get(crate::catalog::DEFAULT_KEY) {
                rows.push(vec![
                    oid(r.oid * 1000 + i as i64),
                    oid(r.oid),
                    int16(i as i64 + 1),
                    text(default),
                ]);
            }
        }
    }
    rows
}

const PG_DATABASE: &[(&str, DataType)] = &[
    ("oid", OID),
    ("datname", TEXT),
    ("datdba", OID),
    ("encoding", I32),
    ("datlocprovider", TEXT),
    ("datistemplate", BOOL),
    ("datallowconn", BOOL),
    ("datconnlimit", I32),
    ("dattablespace", OID),
    ("datcollate", TEXT),
    ("datctype", TEXT),
    ("daticulocale", TEXT),
    ("datcollversion", TEXT),
    ("datacl", LIST),
];

const PG_ROLES: &[(&str, DataType)] = &[
    ("oid", OID),
    ("rolname", TEXT),
    ("rolsuper", BOOL),
    ("rolinherit", BOOL),
    ("rolcreaterole", BOOL),
    ("rolcreatedb", BOOL),
    ("rolcanlogin", BOOL),
    ("rolreplication", BOOL),
    ("rolbypassrls", BOOL),
    ("rolconnlimit", I32),
    ("rolpassword", TEXT),
    ("rolvaliduntil", TEXT),
    ("rolconfig", TEXT),
];

/// The `pg_catalog` schema: every table built on demand.
#[derive(Debug)]
pub(crate) struct PgCatalogSchema {
    pub shared: Arc<crate::catalog::SessionShared>,
}

impl PgCatalogSchema {
    /// A view's columns are those of its planned query.
    async fn plan_view_columns(&self, snapshot: &mut Snapshot) {
        let Some(state) = self.shared.session_state() else {
            return;
        };
        for view in snapshot.relations.iter_mut().filter(|r| r.kind == "v") {
            let Some(definition) = &view.definition else {
                continue;
            };
            if let Ok(plan) = state.create_logical_plan(definition).await {
                view.columns = plan
                    .schema()
                    .fields()
                    .iter()
                    .map(|f| f.as_ref().clone())
                    .collect();
            }
        }
    }
}

#[async_trait]
impl SchemaProvider for PgCatalogSchema {
    fn table_names(&self) -> Vec<String> {
        TABLES.iter().map(|t| t.0.to_string()).collect()
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        let Some((_, columns, rows)) = TABLES.iter().find(|t| t.0 == name) else {
            return Ok(None);
        };
        let mut snapshot = Snapshot::take(&self.shared.db);
        if matches!(name, "pg_attribute" | "pg_class") {
            self.plan_view_columns(&mut snapshot).await;
        }
        Ok(Some(Arc::new(build_table(columns, rows(&snapshot))?)))
    }

    fn table_exist(&self, name: &str) -> bool {
        TABLES.iter().any(|t| t.0 == name)
    }
}

pub(crate) fn is_catalog_table(name: &str) -> bool {
    TABLES.iter().any(|t| t.0 == name)
}

fn column_type(layout: &DataType) -> DataType {
    match layout {
        DataType::Null => text_list(),
        DataType::UInt8 => DataType::List(Arc::new(Field::new_list_field(DataType::Int64, true))),
        other => other.clone(),
    }
}

fn build_table(columns: &[(&str, DataType)], rows: Vec<Vec<ScalarValue>>) -> DfResult<MemTable> {
    let schema: SchemaRef = Arc::new(Schema::new(
        columns
            .iter()
            .map(|(name, data_type)| Field::new(*name, column_type(data_type), true))
            .collect::<Vec<_>>(),
    ));
    let arrays = (0..columns.len())
        .map(|c| {
            let values = rows.iter().map(|row| row[c].clone());
            if rows.is_empty() {
                Ok(arrow_array::new_empty_array(&column_type(&columns[c].1)))
            } else {
                ScalarValue::iter_to_array(values)
            }
        })
        .collect::<DfResult<Vec<ArrayRef>>>()?;
    let batch = RecordBatch::try_new(schema.clone(), arrays)?;
    MemTable::try_new(schema, vec![vec![batch]])
}

// ---- the functions ------------------------------------------------------

type Body = dyn Fn(&[ScalarValue]) -> ScalarValue + Send + Sync;

/// A catalog function, evaluated row by row (catalog results are small).
struct CatalogFunction {
    name: &'static str,
    returns: DataType,
    signature: Signature,
    body: Arc<Body>,
}

impl std::fmt::Debug for CatalogFunction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

impl PartialEq for CatalogFunction {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for CatalogFunction {}

impl std::hash::Hash for CatalogFunction {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name.hash(state);
    }
}

impl ScalarUDFImpl for CatalogFunction {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> DfResult<DataType> {
        Ok(self.returns.clone())
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let all_scalar = args
            .args
            .iter()
            .all(|a| matches!(a, ColumnarValue::Scalar(_)));
        let rows = if all_scalar { 1 } else { args.number_rows };
        let arrays: Vec<ArrayRef> = args
            .args
            .iter()
            .map(|a| a.to_array(rows))
            .collect::<DfResult<_>>()?;
        let values = (0..rows)
            .map(|row| {
                let inputs = arrays
                    .iter()
                    .map(|a| ScalarValue::try_from_array(a, row))
                    .collect::<DfResult<Vec<_>>>()?;
                Ok((self.body)(&inputs))
            })
            .collect::<DfResult<Vec<_>>>()?;
        if all_scalar {
            let value = values.into_iter().next().unwrap_or(ScalarValue::Utf8(None));
            return Ok(ColumnarValue::Scalar(value.cast_to(&self.returns)?));
        }
        let array = if values.is_empty() {
            arrow_array::new_empty_array(&self.returns)
        } else {
            ScalarValue::iter_to_array(values)?
        };
        Ok(ColumnarValue::Array(datafusion::arrow::compute::cast(
            &array,
            &self.returns,
        )?))
    }
}

fn function(
    name: &'static str,
    returns: DataType,
    body: impl Fn(&[ScalarValue]) -> ScalarValue + Send + Sync + 'static,
) -> ScalarUDF {
    ScalarUDF::from(CatalogFunction {
        name,
        returns,
        signature: Signature::one_of(
            vec![TypeSignature::Nullary, TypeSignature::VariadicAny],
            Volatility::Stable,
        ),
        body: Arc::new(body),
    })
}

fn as_i64(value: Option<&ScalarValue>) -> Option<i64> {
    match value?.cast_to(&DataType::Int64).ok()? {
        ScalarValue::Int64(v) => v,
        _ => None,
    }
}

fn as_text(value: Option<&ScalarValue>) -> Option<String> {
    match value?.cast_to(&DataType::Utf8).ok()? {
        ScalarValue::Utf8(v) => v,
        _ => None,
    }
}

/// Postgres quotes an identifier unless it is all lower case, digits and
/// underscores, not starting with a digit.
fn quote_ident(name: &str) -> String {
    let plain = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if plain {
        name.to_string()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

pub(crate) fn functions(db: Arc<Db>) -> Vec<ScalarUDF> {
    let owner = |_: &[ScalarValue]| text(OWNER);
    let yes = |_: &[ScalarValue]| boolean(true);
    let null_text = |_: &[ScalarValue]| no_text();
    let by_oid = |name: &'static str, db: Arc<Db>, f: fn(&Snapshot, i64) -> Option<String>| {
        function(name, TEXT, move |args| {
            let found = as_i64(args.first()).and_then(|o| f(&Snapshot::take(&db), o));
            ScalarValue::Utf8(found)
        })
    };
    vec![
        function("pg_get_userbyid", TEXT, owner),
        function("current_user", TEXT, owner),
        function("session_user", TEXT, owner),
        function("current_role", TEXT, owner),
        function("pg_table_is_visible", BOOL, yes),
        function("pg_type_is_visible", BOOL, yes),
        function("has_table_privilege", BOOL, yes),
        function("has_schema_privilege", BOOL, yes),
        function("has_database_privilege", BOOL, yes),
        function("obj_description", TEXT, null_text),
        function("col_description", TEXT, null_text),
        function("shobj_description", TEXT, null_text),
        function("pg_encoding_to_char", TEXT, |_| text("UTF8")),
        function("pg_function_is_visible", BOOL, yes),
        function("pg_relation_is_publishable", BOOL, |_| boolean(false)),
        function("pg_get_statisticsobjdef_columns", TEXT, null_text),
        function("pg_get_function_result", TEXT, null_text),
        function("pg_get_function_arguments", TEXT, null_text),
        function("pg_backend_pid", I32, |_| int32(std::process::id() as i32)),
        function("format_type", TEXT, |args| {
            let typmod = as_i64(args.get(1)).and_then(|m| i32::try_from(m).ok());
            ScalarValue::Utf8(as_i64(args.first()).and_then(|o| pgtypes::format_type(o, typmod)))
        }),
        // Defaults are kept as their SQL text already.
        function("pg_get_expr", TEXT, |args| {
            ScalarValue::Utf8(as_text(args.first()))
        }),
        function("quote_ident", TEXT, |args| {
            ScalarValue::Utf8(as_text(args.first()).map(|n| quote_ident(&n)))
        }),
        by_oid("pg_get_indexdef", db.clone(), Snapshot::index_definition),
        by_oid(
            "pg_get_constraintdef",
            db.clone(),
            Snapshot::constraint_definition,
        ),
        by_oid("pg_get_viewdef", db.clone(), |s, o| {
            s.relation(o).and_then(|r| r.definition.clone())
        }),
        by_oid("basalt_relation_name", db, |s, o| {
            s.relation(o).map(|r| match r.schema.as_str() {
                SCHEMA => quote_ident(&r.name),
                schema => format!("{}.{}", quote_ident(schema), quote_ident(&r.name)),
            })
        }),
    ]
}

// ---- the rewrite --------------------------------------------------------

/// Turns the Postgres-only syntax catalog queries use into plain SQL.
pub(crate) fn rewrite(statement: &mut ast::Statement) {
    let _ = ast::visit_expressions_mut(statement, |expr| {
        rewrite_expr(expr);
        ControlFlow::<()>::Continue(())
    });
    let mut reads_catalog = false;
    let _ = ast::visit_relations_mut(statement, |name| {
        qualify_catalog_table(name);
        reads_catalog |= name.0.len() == 2
            && name.0[0]
                .as_ident()
                .is_some_and(|i| i.value.eq_ignore_ascii_case(PG_CATALOG));
        ControlFlow::<()>::Continue(())
    });
    if reads_catalog {
        let _ = ast::visit_expressions_mut(statement, |expr| {
            plannable_subquery(expr);
            ControlFlow::<()>::Continue(())
        });
        if let ast::Statement::Query(query) = statement {
            name_columns(&mut query.body);
        }
    }
}

/// The name Postgres gives an unnamed result column: a function's name,
/// a cast's operand's, or `?column?`.
fn postgres_column_name(expr: &Expr) -> String {
    match expr {
        Expr::Function(f) => f
            .name
            .0
            .last()
            .and_then(|p| p.as_ident())
            .map_or_else(|| "?column?".to_string(), |i| i.value.to_ascii_lowercase()),
        Expr::Cast { expr, .. } | Expr::Nested(expr) => postgres_column_name(expr),
        Expr::Case { .. } => "case".to_string(),
        Expr::Identifier(ident) => ident.value.clone(),
        Expr::CompoundIdentifier(parts) => {
            parts.last().map_or_else(String::new, |p| p.value.clone())
        }
        _ => "?column?".to_string(),
    }
}

/// Postgres lets unnamed result columns share a name (`?column?`);
/// DataFusion needs them distinct, so each gets its own.
fn name_columns(body: &mut ast::SetExpr) {
    match body {
        ast::SetExpr::Select(select) => {
            let mut used = std::collections::HashSet::new();
            for item in select.projection.iter_mut() {
                let ast::SelectItem::UnnamedExpr(expr) = item else {
                    continue;
                };
                if matches!(expr, Expr::Identifier(_) | Expr::CompoundIdentifier(_)) {
                    continue;
                }
                let mut name = postgres_column_name(expr);
                while !used.insert(name.clone()) {
                    name.push('_');
                }
                let expr = std::mem::replace(expr, Expr::value(ast::Value::Null));
                *item = ast::SelectItem::ExprWithAlias {
                    expr,
                    alias: ast::Ident::with_quote('"', name),
                };
            }
        }
        ast::SetExpr::SetOperation { left, right, .. } => {
            name_columns(left);
            name_columns(right);
        }
        ast::SetExpr::Query(query) => name_columns(&mut query.body),
        _ => {}
    }
}

/// Reshapes the correlated subqueries of catalog queries into forms
/// DataFusion decorrelates: `ARRAY(SELECT x ...)` aggregates with
/// `array_agg`, a scalar subquery takes `max` of its one row, and
/// conditions on the outer row alone move out into a CASE.
fn plannable_subquery(expr: &mut Expr) {
    let (mut query, array) = match expr {
        Expr::Subquery(query) => (query.clone(), false),
        Expr::Function(f) if f.name.to_string().eq_ignore_ascii_case("array") => match &f.args {
            ast::FunctionArguments::Subquery(query) => (query.clone(), true),
            _ => return,
        },
        _ => return,
    };
    let from = subquery_sources(&query);
    // The only collation is the default one, option arrays are always
    // empty, and the one role is in no other role or policy: these
    // look-ups find nothing.
    let finds_nothing = from
        .iter()
        .any(|t| t == "pg_collation" || t == "unnest" || (array && t == "pg_roles"));
    if finds_nothing {
        *expr = Expr::value(ast::Value::Null);
        return;
    }
    let outer_only = take_outer_conditions(&mut query);
    aggregate_projection(&mut query, if array { "array_agg" } else { "max" });
    let subquery = Expr::Subquery(query);
    *expr = match outer_only {
        None => subquery,
        Some(condition) => Expr::Case {
            case_token: ast::helpers::attached_token::AttachedToken::empty(),
            end_token: ast::helpers::attached_token::AttachedToken::empty(),
            operand: None,
            conditions: vec![ast::CaseWhen {
                condition,
                result: subquery,
            }],
            else_result: None,
        },
    };
}

/// The table names (and aliases) a subquery reads.
fn subquery_sources(query: &ast::Query) -> Vec<String> {
    let ast::SetExpr::Select(select) = query.body.as_ref() else {
        return Vec::new();
    };
    let mut names = Vec::new();
    for table in &select.from {
        for factor in
            std::iter::once(&table.relation).chain(table.joins.iter().map(|j| &j.relation))
        {
            match factor {
                ast::TableFactor::Table {
                    name, alias, args, ..
                } => {
                    if let Some(last) = name.0.last().and_then(|p| p.as_ident()) {
                        names.push(if args.is_some() {
                            "unnest".to_string()
                        } else {
                            last.value.clone()
                        });
                    }
                    if let Some(alias) = alias {
                        names.push(alias.name.value.clone());
                    }
                }
                ast::TableFactor::Function { name, .. } => names.push(name.to_string()),
                _ => names.push(String::new()),
            }
        }
    }
    names
}

/// Removes the WHERE conditions that name only the outer query's columns
/// and returns them joined with AND.
fn take_outer_conditions(query: &mut ast::Query) -> Option<Expr> {
    let inner = subquery_sources(query);
    let ast::SetExpr::Select(select) = query.body.as_mut() else {
        return None;
    };
    let selection = select.selection.take()?;
    let (outer, kept): (Vec<Expr>, Vec<Expr>) = conjuncts(selection)
        .into_iter()
        .partition(|c| names_only_outer(c, &inner));
    select.selection = and_all(kept);
    and_all(outer)
}

fn conjuncts(expr: Expr) -> Vec<Expr> {
    let mut parts = Vec::new();
    crate::sql::syntax::conjuncts(&expr, &mut parts);
    parts.into_iter().cloned().collect()
}

fn and_all(exprs: Vec<Expr>) -> Option<Expr> {
    exprs.into_iter().reduce(|left, right| Expr::BinaryOp {
        left: Box::new(left),
        op: BinaryOperator::And,
        right: Box::new(right),
    })
}

/// Whether every column `expr` names is qualified by something other than
/// the subquery's own tables (and it names at least one).
fn names_only_outer(expr: &Expr, inner: &[String]) -> bool {
    let mut outer = 0;
    let mut local = 0;
    let mut probe = expr.clone();
    let _ = ast::visit_expressions_mut(&mut probe, |e| {
        match e {
            Expr::CompoundIdentifier(parts) if parts.len() == 2 => {
                if inner.contains(&parts[0].value) {
                    local += 1;
                } else {
                    outer += 1;
                }
            }
            Expr::Identifier(_) | Expr::Subquery(_) | Expr::Exists { .. } => local += 1,
            _ => {}
        }
        ControlFlow::<()>::Continue(())
    });
    outer > 0 && local == 0
}

/// DataFusion plans a correlated scalar subquery only when it aggregates;
/// the catalog's look-ups (a column's default, its collation) find at most
/// one row, so `max` of it is the row.
/// DataFusion plans a correlated scalar subquery only when it aggregates;
/// the catalog's look-ups (a column's default, its collation) find at most
/// one row, so `max` of it is the row.
fn aggregate_projection(query: &mut ast::Query, aggregate: &str) {
    let ast::SetExpr::Select(select) = query.body.as_mut() else {
        return;
    };
    let grouped = !matches!(&select.group_by, ast::GroupByExpr::Expressions(e, _) if e.is_empty());
    if grouped || select.projection.len() != 1 {
        return;
    }
    let expr = match &mut select.projection[0] {
        ast::SelectItem::UnnamedExpr(expr) | ast::SelectItem::ExprWithAlias { expr, .. } => expr,
        _ => return,
    };
    let aggregated = matches!(expr, Expr::Function(f) if f.name.0.last().and_then(|p| p.as_ident()).is_some_and(|n| {
        matches!(n.value.to_ascii_lowercase().as_str(), "count" | "max" | "min" | "sum" | "avg" | "array_agg" | "string_agg" | "bool_and" | "bool_or")
    }));
    if !aggregated {
        let inner = std::mem::replace(expr, Expr::value(ast::Value::Null));
        *expr = call(aggregate, vec![inner]);
    }
}

fn rewrite_expr(expr: &mut Expr) {
    match expr {
        Expr::BinaryOp { op, left, right } => {
            if let BinaryOperator::PGCustomBinaryOperator(parts) = op {
                if let Some(plain) = plain_operator(parts) {
                    *op = plain;
                }
            }
            if matches!(op, BinaryOperator::Eq | BinaryOperator::NotEq) {
                array_literal(left);
                array_literal(right);
            }
        }
        Expr::Collate { expr: inner, .. } => {
            let mut inner = std::mem::replace(inner.as_mut(), Expr::value(ast::Value::Null));
            rewrite_expr(&mut inner);
            *expr = inner;
        }
        Expr::Cast {
            expr: inner,
            data_type,
            ..
        } => {
            if let Some(replacement) = rewrite_cast(inner, data_type) {
                *expr = replacement;
            }
        }
        Expr::Function(function) => unqualify(&mut function.name),
        Expr::Value(value) => {
            if let ast::Value::Number(digits, _) = &value.value {
                if let Some(numeric) = integer_beyond_u64(digits) {
                    *expr = numeric;
                }
            }
        }
        _ => {}
    }
}

/// An integer literal too large for an unsigned 64-bit integer as
/// `numeric(38, 0)`, as Postgres types it; DataFusion would read it as a
/// double and lose digits. Literals up to 38 digits fit.
fn integer_beyond_u64(digits: &str) -> Option<Expr> {
    let integer = !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit());
    if !integer || digits.parse::<u64>().is_ok() || digits.len() > 38 {
        return None;
    }
    Some(Expr::Cast {
        kind: ast::CastKind::DoubleColon,
        expr: Box::new(Expr::value(ast::Value::SingleQuotedString(
            digits.to_string(),
        ))),
        data_type: ast::DataType::Numeric(ast::ExactNumberInfo::PrecisionAndScale(38, 0)),
        array: false,
        format: None,
    })
}

/// `'{0}'` compared with an array column is the array of its items.
fn array_literal(expr: &mut Expr) {
    let Expr::Value(value) = expr else {
        return;
    };
    let ast::Value::SingleQuotedString(text) = &value.value else {
        return;
    };
    let Some(items) = text.strip_prefix('{').and_then(|t| t.strip_suffix('}')) else {
        return;
    };
    let numbers: Option<Vec<Expr>> = items
        .split(',')
        .filter(|i| !i.is_empty())
        .map(|i| {
            i.trim()
                .parse::<i64>()
                .ok()
                .map(|n| Expr::value(ast::Value::Number(n.to_string(), false)))
        })
        .collect();
    if let Some(numbers) = numbers {
        *expr = call("make_array", numbers);
    }
}

/// `OPERATOR(pg_catalog.~)` is the plain `~`.
fn plain_operator(parts: &[String]) -> Option<BinaryOperator> {
    let [schema, symbol] = parts else {
        return None;
    };
    if schema != PG_CATALOG {
        return None;
    }
    Some(match symbol.as_str() {
        "~" => BinaryOperator::PGRegexMatch,
        "~*" => BinaryOperator::PGRegexIMatch,
        "!~" => BinaryOperator::PGRegexNotMatch,
        "!~*" => BinaryOperator::PGRegexNotIMatch,
        "=" => BinaryOperator::Eq,
        "<>" => BinaryOperator::NotEq,
        "<" => BinaryOperator::Lt,
        "<=" => BinaryOperator::LtEq,
        ">" => BinaryOperator::Gt,
        ">=" => BinaryOperator::GtEq,
        "||" => BinaryOperator::StringConcat,
        _ => return None,
    })
}

/// Casts to the catalog's reference types and `pg_catalog.`-qualified type
/// names.
fn rewrite_cast(inner: &mut Expr, data_type: &mut ast::DataType) -> Option<Expr> {
    if *data_type == ast::DataType::Regclass {
        *data_type =
            ast::DataType::Custom(ObjectName::from(vec![ast::Ident::new("regclass")]), vec![]);
    }
    let ast::DataType::Custom(name, _) = data_type else {
        return None;
    };
    let type_name = name.0.last()?.as_ident()?.value.to_ascii_lowercase();
    let qualified = name.0.len() == 2;
    let take = |inner: &mut Expr| std::mem::replace(inner, Expr::value(ast::Value::Null));
    match type_name.as_str() {
        "regclass" => Some(match take(inner) {
            Expr::Value(value) => match value.value {
                ast::Value::SingleQuotedString(relation) => regclass_lookup(&relation),
                other => Expr::value(other),
            },
            other => call("basalt_relation_name", vec![other]),
        }),
        "regtype" => Some(call(
            "format_type",
            vec![take(inner), Expr::value(ast::Value::Null)],
        )),
        "oid" | "regproc" | "regprocedure" | "regnamespace" | "regrole" | "xid" | "cid" => {
            *data_type = ast::DataType::BigInt(None);
            None
        }
        "name" | "char" | "int2vector" | "oidvector" | "pg_node_tree" | "aclitem" => {
            *data_type = ast::DataType::Text;
            None
        }
        _ if qualified && name.0[0].as_ident()?.value == PG_CATALOG => {
            *data_type = plain_type(&type_name)?;
            None
        }
        _ => None,
    }
}

fn plain_type(name: &str) -> Option<ast::DataType> {
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;
    Parser::new(&PostgreSqlDialect {})
        .try_with_sql(name)
        .ok()?
        .parse_data_type()
        .ok()
}

/// `'t'::regclass`: the OID of the relation the text names.
fn regclass_lookup(relation: &str) -> Expr {
    let (schema, name) = match relation.split_once('.') {
        Some((schema, name)) => (Some(schema), name),
        None => (None, relation),
    };
    let quoted = |s: &str| s.replace('\'', "''");
    let unquote = |s: &str| s.trim_matches('"').to_string();
    let mut sql = format!(
        "SELECT c.oid FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.relname = '{}'",
        quoted(&unquote(name))
    );
    if let Some(schema) = schema {
        sql.push_str(&format!(" AND n.nspname = '{}'", quoted(&unquote(schema))));
    }
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;
    match Parser::new(&PostgreSqlDialect {})
        .try_with_sql(&sql)
        .and_then(|mut p| p.parse_query())
    {
        Ok(query) => Expr::Subquery(query),
        Err(_) => Expr::value(ast::Value::Null),
    }
}

/// `pg_catalog.lower(x)` is `lower(x)`.
fn unqualify(name: &mut ObjectName) {
    let qualified = name.0.len() == 2
        && name.0[0]
            .as_ident()
            .is_some_and(|i| i.value.eq_ignore_ascii_case(PG_CATALOG));
    if qualified {
        name.0.remove(0);
    }
}

/// An unqualified `pg_class` is `pg_catalog.pg_class`: pg_catalog comes
/// first on Postgres' search path.
fn qualify_catalog_table(name: &mut ObjectName) {
    if let [ObjectNamePart::Identifier(table)] = name.0.as_slice() {
        if table.quote_style.is_none() && is_catalog_table(&table.value.to_ascii_lowercase()) {
            name.0
                .insert(0, ObjectNamePart::Identifier(ast::Ident::new(PG_CATALOG)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewritten(sql: &str) -> String {
        use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
        use datafusion::sql::sqlparser::parser::Parser;
        let mut statement = Parser::parse_sql(&PostgreSqlDialect {}, sql)
            .unwrap()
            .pop()
            .unwrap();
        rewrite(&mut statement);
        statement.to_string()
    }

    #[test]
    fn psql_syntax_becomes_plain_sql() {
        assert_eq!(
            rewritten("SELECT c.oid FROM pg_class c WHERE c.relname OPERATOR(pg_catalog.~) '^(t)$' COLLATE pg_catalog.default AND pg_catalog.pg_table_is_visible(c.oid)"),
            "SELECT c.oid FROM pg_catalog.pg_class c WHERE c.relname ~ '^(t)$' AND pg_table_is_visible(c.oid)"
        );
        assert_eq!(
            rewritten("SELECT a.atttypid::pg_catalog.regtype::pg_catalog.text, x::pg_catalog.int4, y::oid"),
            "SELECT format_type(a.atttypid, NULL)::TEXT, x::INT4, y::BIGINT"
        );
        assert!(rewritten("SELECT 'public.t'::regclass").contains("n.nspname = 'public'"));
    }

    #[test]
    fn identifiers_are_quoted_as_postgres_quotes_them() {
        assert_eq!(quote_ident("plain_1"), "plain_1");
        assert_eq!(quote_ident("Mixed"), "\"Mixed\"");
        assert_eq!(quote_ident("1st"), "\"1st\"");
    }
}
