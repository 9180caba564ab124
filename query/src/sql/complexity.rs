//! Refuses statements too complex to run (54001, statement_too_complex)
//! before anything recursive touches them. A long chain of binary operators
//! parses in a loop but builds a syntax tree as deep as the chain, and the
//! rewriting visitors, the planner and even the tree's `Drop` recurse once
//! per level: 200,000 ANDs overflow any thread's stack. sqlparser's own
//! recursion limit bounds nesting (parentheses, subqueries); this bounds the
//! rest from the tokens, in one linear pass.

use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

use crate::sql::error::{Error, Result};

/// The deepest expression tree a statement may build. PostgreSQL's default
/// `max_stack_depth` (2 MB) stops at a few thousand levels; Basalt's syntax
/// tree is walked by several recursive passes, so it stops earlier.
pub const MAX_EXPRESSION_DEPTH: usize = 1000;

/// Statements shorter than this cannot build a tree deeper than the limit
/// (every level takes at least two bytes), so they skip the scan.
const SHORTEST_TOO_DEEP: usize = 2 * MAX_EXPRESSION_DEPTH;

/// 54001 if `sql` could build an expression deeper than [`MAX_EXPRESSION_DEPTH`].
pub fn check(sql: &str) -> Result<()> {
    if sql.len() < SHORTEST_TOO_DEEP {
        return Ok(());
    }
    // A statement that does not tokenize gets its syntax error from the parser.
    let Ok(tokens) = Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize() else {
        return Ok(());
    };
    let depth = depth_bound(&tokens);
    if depth > MAX_EXPRESSION_DEPTH {
        return Err(too_complex(format!(
            "statement too complex: its expressions may nest {depth} levels deep, more than the {MAX_EXPRESSION_DEPTH} allowed"
        )));
    }
    Ok(())
}

/// The error for a statement nested past a limit.
pub fn too_complex(message: impl Into<String>) -> Error {
    Error::sql("54001", message)
}

/// One parenthesis level of the scan.
#[derive(Default)]
struct Level {
    /// Operators in the current expression (since the last comma or clause).
    operators: usize,
    /// The deepest parenthesised group inside the current expression.
    deepest_group: usize,
    /// The deepest expression finished at this level.
    deepest: usize,
    /// UNION, INTERSECT and EXCEPT chain whole queries into one tree.
    set_operations: usize,
}

impl Level {
    fn end_expression(&mut self) {
        self.deepest = self.deepest.max(self.operators + self.deepest_group);
        self.operators = 0;
        self.deepest_group = 0;
    }

    fn depth(mut self) -> usize {
        self.end_expression();
        self.set_operations + self.deepest
    }
}

/// An upper bound on the depth of the trees the tokens can parse into: at
/// each level, the operators of one expression (each may be one level of a
/// left-deep chain) plus the deepest group nested in it.
fn depth_bound(tokens: &[Token]) -> usize {
    let mut levels = vec![Level::default()];
    for token in tokens {
        match token {
            Token::Whitespace(_) | Token::Period => {}
            Token::LParen | Token::LBracket => levels.push(Level::default()),
            Token::RParen | Token::RBracket => {
                if levels.len() > 1 {
                    let group = levels.pop().map_or(0, Level::depth) + 1;
                    if let Some(outer) = levels.last_mut() {
                        outer.deepest_group = outer.deepest_group.max(group);
                    }
                }
            }
            Token::Comma | Token::SemiColon => end_expression(&mut levels),
            Token::Word(word) => match word.keyword {
                Keyword::UNION | Keyword::INTERSECT | Keyword::EXCEPT => {
                    if let Some(level) = levels.last_mut() {
                        level.end_expression();
                        level.set_operations += 1;
                    }
                }
                keyword if CLAUSES.contains(&keyword) => end_expression(&mut levels),
                keyword if OPERATOR_WORDS.contains(&keyword) => count_operator(&mut levels),
                _ => {}
            },
            Token::Number(..)
            | Token::SingleQuotedString(_)
            | Token::DoubleQuotedString(_)
            | Token::DollarQuotedString(_)
            | Token::NationalStringLiteral(_)
            | Token::EscapedStringLiteral(_)
            | Token::HexStringLiteral(_)
            | Token::Placeholder(_) => {}
            _ => count_operator(&mut levels),
        }
    }
    levels.into_iter().rev().fold(0, |inner, mut level| {
        level.deepest_group = level.deepest_group.max(inner);
        level.depth()
    })
}

fn end_expression(levels: &mut [Level]) {
    if let Some(level) = levels.last_mut() {
        level.end_expression();
    }
}

fn count_operator(levels: &mut [Level]) {
    if let Some(level) = levels.last_mut() {
        level.operators += 1;
    }
}

/// Keywords that start a new expression.
const CLAUSES: &[Keyword] = &[
    Keyword::SELECT,
    Keyword::FROM,
    Keyword::WHERE,
    Keyword::GROUP,
    Keyword::HAVING,
    Keyword::ORDER,
    Keyword::LIMIT,
    Keyword::OFFSET,
    Keyword::WHEN,
    Keyword::THEN,
    Keyword::ELSE,
    Keyword::END,
    Keyword::VALUES,
    Keyword::SET,
    Keyword::RETURNING,
    Keyword::JOIN,
    Keyword::ON,
    Keyword::WINDOW,
];

/// Keywords that join operands into a larger expression.
const OPERATOR_WORDS: &[Keyword] = &[
    Keyword::AND,
    Keyword::OR,
    Keyword::NOT,
    Keyword::IS,
    Keyword::LIKE,
    Keyword::ILIKE,
    Keyword::SIMILAR,
    Keyword::BETWEEN,
    Keyword::IN,
    Keyword::COLLATE,
    Keyword::AT,
];

#[cfg(test)]
mod tests {
    use super::*;

    fn bound(sql: &str) -> usize {
        depth_bound(
            &Tokenizer::new(&PostgreSqlDialect {}, sql)
                .tokenize()
                .unwrap(),
        )
    }

    #[test]
    fn chains_count_their_operators_and_groups_add_up() {
        assert_eq!(bound("SELECT 1"), 0);
        assert_eq!(bound("SELECT 1 + 2 + 3"), 2);
        assert_eq!(bound("SELECT a = 1 AND b = 2"), 3);
        assert_eq!(bound("SELECT (1 + (2 + 3)) * 4"), 5);
        assert_eq!(bound("SELECT 1 UNION SELECT 2 UNION SELECT 3"), 2);
    }

    #[test]
    fn wide_lists_are_not_deep() {
        let columns = vec!["a + b"; 5000].join(", ");
        assert_eq!(bound(&format!("SELECT {columns} FROM t")), 1);
        let rows = vec!["(1 + 2, 'x')"; 5000].join(", ");
        assert_eq!(bound(&format!("INSERT INTO t VALUES {rows}")), 2);
        let cases = vec!["WHEN a = 1 THEN b + 1"; 5000].join(" ");
        assert_eq!(bound(&format!("SELECT CASE {cases} END")), 1);
        assert!(check(&format!("SELECT {columns} FROM t")).is_ok());
    }

    #[test]
    fn long_chains_are_refused_with_54001() {
        let chain = vec!["a = 1"; 2000].join(" AND ");
        let err = check(&format!("SELECT * FROM t WHERE {chain}")).unwrap_err();
        assert_eq!(err.sqlstate(), "54001");
        // Unbalanced parentheses still give a bound; the parser reports them.
        assert!(bound(&format!("SELECT {}", ")".repeat(10))) < 10);
    }
}
