//! Sequences (`CREATE SEQUENCE`, `nextval`, `currval`, and the `serial`
//! column types built on them). As in Postgres they are not transactional:
//! a value handed out stays used even if its transaction rolls back.
//!
//! Each sequence's state is a row of the catalog table holding the end of
//! the block of values reserved so far. A database hands values out of the
//! block in memory and reserves the next block (one small commit) when it
//! runs out, so a restart skips at most the rest of a block, never reuses a
//! value.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::builder::Int64Builder;
use arrow_array::cast::AsArray;
use arrow_array::{Array, ArrayRef};
use arrow_schema::DataType;
use basalt_storage::Db;
use datafusion::arrow::compute::cast;
use datafusion::common::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use parking_lot::Mutex;

use crate::catalog::{meta_put, meta_remove, meta_rows, SCHEMA};
use crate::sql::error::{Error, Result};

/// Values reserved per catalog write.
const BLOCK: i64 = 1000;

#[derive(Debug, Clone, Copy)]
struct State {
    /// Wider than the values: one past `i64::MAX` means the sequence is spent.
    next: i128,
    reserved_until: i128,
}

/// The sequences of one database, shared by its sessions.
#[derive(Debug, Default)]
pub(crate) struct Sequences {
    state: Mutex<HashMap<String, State>>,
}

/// `name` or `schema.name` as the catalog keys it.
fn split(name: &str) -> (String, String) {
    let name = name.trim_matches('"').to_lowercase();
    match name.split_once('.') {
        Some((schema, table)) => (schema.to_string(), table.to_string()),
        None => (SCHEMA.to_string(), name),
    }
}

fn key(name: &str) -> String {
    let (schema, sequence) = split(name);
    format!("{schema}.{sequence}")
}

impl Sequences {
    pub fn create(&self, db: &Db, name: &str, start: i64, if_not_exists: bool) -> Result<()> {
        let (schema, sequence) = split(name);
        if self.exists(db, &schema, &sequence)? {
            if if_not_exists {
                return Ok(());
            }
            return Err(Error::sql(
                "42P07",
                format!("relation \"{sequence}\" already exists"),
            ));
        }
        // The reserved end starts just below the first value.
        let reserved = start.checked_sub(1).ok_or_else(|| {
            Error::sql(
                "22003",
                format!("START value ({start}) is out of range for sequence \"{sequence}\""),
            )
        })?;
        meta_put(
            db,
            "sequence",
            &schema,
            &sequence,
            Some(&reserved.to_string()),
        )?;
        self.state.lock().remove(&format!("{schema}.{sequence}"));
        Ok(())
    }

    pub fn remove(&self, db: &Db, name: &str, if_exists: bool) -> Result<()> {
        let (schema, sequence) = split(name);
        if !self.exists(db, &schema, &sequence)? {
            if if_exists {
                return Ok(());
            }
            return Err(Error::sql(
                "42P01",
                format!("sequence \"{sequence}\" does not exist"),
            ));
        }
        meta_remove(db, "sequence", &schema, &sequence)?;
        self.state.lock().remove(&format!("{schema}.{sequence}"));
        Ok(())
    }

    fn exists(&self, db: &Db, schema: &str, name: &str) -> Result<bool> {
        Ok(meta_rows(db, "sequence")?
            .iter()
            .any(|r| r.schema == schema && r.name == name))
    }

    pub fn next(&self, db: &Db, name: &str) -> Result<i64> {
        let (schema, sequence) = split(name);
        let key = key(name);
        let mut states = self.state.lock();
        let state = match states.get(&key) {
            Some(state) => *state,
            None => {
                let stored = meta_rows(db, "sequence")?
                    .into_iter()
                    .find(|r| r.schema == schema && r.name == sequence)
                    .and_then(|r| r.definition)
                    .ok_or_else(|| {
                        Error::sql("42P01", format!("relation \"{sequence}\" does not exist"))
                    })?;
                let reserved: i64 = stored.parse().map_err(|_| {
                    Error::sql(
                        "XX001",
                        format!("sequence \"{sequence}\" has state {stored:?}"),
                    )
                })?;
                State {
                    next: i128::from(reserved) + 1,
                    reserved_until: i128::from(reserved),
                }
            }
        };
        let mut state = state;
        // As PostgreSQL: past the largest bigint, 2200H and no value.
        let Ok(value) = i64::try_from(state.next) else {
            return Err(Error::sql(
                "2200H",
                format!(
                    "nextval: reached maximum value of sequence \"{sequence}\" ({})",
                    i64::MAX
                ),
            ));
        };
        if state.next > state.reserved_until {
            let until = value.saturating_add(BLOCK - 1);
            meta_put(db, "sequence", &schema, &sequence, Some(&until.to_string()))?;
            state.reserved_until = i128::from(until);
        }
        state.next += 1;
        states.insert(key, state);
        Ok(value)
    }
}

/// `nextval(name)` and `currval(name)` for one session (currval is the
/// session's last nextval of that sequence).
#[derive(Debug)]
pub(crate) struct SequenceFunction {
    name: &'static str,
    signature: Signature,
    db: Arc<Db>,
    sequences: Arc<Sequences>,
    last: Arc<Mutex<HashMap<String, i64>>>,
}

impl PartialEq for SequenceFunction {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && Arc::ptr_eq(&self.last, &other.last)
    }
}

impl Eq for SequenceFunction {}

impl std::hash::Hash for SequenceFunction {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name.hash(state);
    }
}

pub(crate) fn functions(db: Arc<Db>, sequences: Arc<Sequences>) -> Vec<ScalarUDF> {
    let last = Arc::new(Mutex::new(HashMap::new()));
    ["nextval", "currval"]
        .into_iter()
        .map(|name| {
            ScalarUDF::from(SequenceFunction {
                name,
                signature: Signature::any(1, Volatility::Volatile),
                db: db.clone(),
                sequences: sequences.clone(),
                last: last.clone(),
            })
        })
        .collect()
}

impl ScalarUDFImpl for SequenceFunction {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Int64)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let arrays: Vec<ArrayRef> = args
            .args
            .iter()
            .map(|a| a.to_array(args.number_rows))
            .collect::<DfResult<_>>()?;
        let Some(names) = arrays.first() else {
            return Err(DataFusionError::Plan(format!(
                "{} takes a sequence name",
                self.name
            )));
        };
        let names = cast(names, &DataType::Utf8)?;
        let names = names.as_string::<i32>();
        let mut out = Int64Builder::with_capacity(args.number_rows);
        for row in 0..args.number_rows {
            if names.is_null(row) {
                out.append_null();
                continue;
            }
            let name = names.value(row);
            let value = match self.name {
                "nextval" => {
                    let value = self
                        .sequences
                        .next(&self.db, name)
                        .map_err(|e| DataFusionError::External(Box::new(e)))?;
                    self.last.lock().insert(key(name), value);
                    value
                }
                _ => *self.last.lock().get(&key(name)).ok_or_else(|| {
                    DataFusionError::External(Box::new(Error::sql(
                        "55000",
                        format!(
                            "currval of sequence \"{}\" is not yet defined in this session",
                            split(name).1
                        ),
                    )))
                })?,
            };
            out.append_value(value);
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}
