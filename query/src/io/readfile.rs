//! `read_csv`, `read_tsv`, `read_parquet`, `read_json` and `read_arrow`:
//! files queried in place, through the loader's readers. The columns and
//! their types are read from the first file when the query is planned; the
//! rows stream from the files (in parallel, in file order) as it runs.
//!
//! `read_csv(path [, header boolean [, delimiter text]])`; the others take
//! the path only. A path may be a directory or a glob pattern.

use basalt_formats::files::InputFile;
use std::sync::Arc;

use arrow_schema::{Schema, SchemaRef};
use datafusion::catalog::streaming::StreamingTable;
use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{DataFusionError, ScalarValue};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::stream::RecordBatchReceiverStreamBuilder;
use datafusion::physical_plan::streaming::PartitionStream;

use crate::io::load::{infer_fields, FileAccess, FileFormat, LoadOptions, LoadPlan, Message};
use crate::sql::error::Error;

/// The table functions, confined to what `access` allows.
pub(crate) fn functions(access: &FileAccess) -> Vec<(&'static str, Arc<dyn TableFunctionImpl>)> {
    [
        ("read_csv", FileFormat::Csv),
        ("read_tsv", FileFormat::Tsv),
        ("read_parquet", FileFormat::Parquet),
        ("read_json", FileFormat::Json),
        ("read_arrow", FileFormat::Arrow),
    ]
    .into_iter()
    .map(|(name, format)| {
        let function: Arc<dyn TableFunctionImpl> = Arc::new(ReadFile {
            name,
            format,
            access: access.clone(),
        });
        (name, function)
    })
    .collect()
}

#[derive(Debug)]
struct ReadFile {
    name: &'static str,
    format: FileFormat,
    access: FileAccess,
}

fn external(e: Error) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

impl ReadFile {
    fn usage(&self) -> DataFusionError {
        let arguments = if self.format.is_delimited_text() {
            "path text [, header boolean [, delimiter text]]"
        } else {
            "path text"
        };
        external(Error::sql(
            "42883",
            format!("{} takes ({arguments}) as constants", self.name),
        ))
    }

    fn options(&self, args: &[Expr]) -> datafusion::error::Result<(String, LoadOptions)> {
        let constant = |i: usize| match args.get(i) {
            Some(Expr::Literal(value, _)) => Some(value.clone()),
            _ => None,
        };
        let Some(ScalarValue::Utf8(Some(path))) = constant(0) else {
            return Err(self.usage());
        };
        let mut options = LoadOptions {
            format: Some(self.format),
            ..LoadOptions::default()
        };
        let most = if self.format.is_delimited_text() {
            3
        } else {
            1
        };
        if args.len() > most {
            return Err(self.usage());
        }
        if args.len() > 1 {
            let Some(ScalarValue::Boolean(Some(header))) = constant(1) else {
                return Err(self.usage());
            };
            options.header = Some(header);
        }
        if args.len() > 2 {
            let delimiter = match constant(2) {
                Some(ScalarValue::Utf8(Some(text))) if text.chars().count() == 1 => {
                    text.chars().next()
                }
                _ => None,
            };
            options.delimiter = Some(delimiter.ok_or_else(|| self.usage())?);
        }
        Ok((path, options))
    }
}

impl TableFunctionImpl for ReadFile {
    fn call_with_args(
        &self,
        args: TableFunctionArgs,
    ) -> datafusion::error::Result<Arc<dyn TableProvider>> {
        let (path, options) = self.options(args.exprs())?;
        let inputs = self.access.open_inputs(&[path]).map_err(external)?;
        let fields = infer_fields(&inputs[0], &options).map_err(external)?;
        let schema = Arc::new(Schema::new(fields));
        let scan = FileScan {
            schema: schema.clone(),
            inputs,
            options,
        };
        Ok(Arc::new(StreamingTable::try_new(
            schema,
            vec![Arc::new(scan)],
        )?))
    }
}

#[derive(Debug)]
struct FileScan {
    schema: SchemaRef,
    inputs: Vec<InputFile>,
    options: LoadOptions,
}

impl PartitionStream for FileScan {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let mut builder = RecordBatchReceiverStreamBuilder::new(self.schema.clone(), 4);
        let tx = builder.tx();
        let (schema, inputs, options) = (
            self.schema.clone(),
            self.inputs.clone(),
            self.options.clone(),
        );
        builder.spawn_blocking(move || {
            let plan = LoadPlan::new(schema, "file".into(), &inputs, &options).map_err(external)?;
            plan.parse_in_parallel(|message| {
                if let Message::Rows(piece) = message {
                    // A closed receiver means the query stopped reading.
                    if tx.blocking_send(Ok(piece.batch)).is_err() {
                        return Err(Error::sql("57014", "canceling the file scan"));
                    }
                }
                Ok(())
            })
            .or_else(|e| match e.sqlstate() {
                "57014" => Ok(()),
                _ => Err(external(e)),
            })
        });
        builder.build()
    }
}
