//! The catalog DataFusion sees: the storage schemas (`crate::catalog`),
//! `pg_catalog` (`crate::pg`) and the internal schema, put together here,
//! above both.

use std::sync::Arc;

use datafusion::catalog::{CatalogProvider, SchemaProvider};

use crate::catalog::{
    meta_rows, InternalSchema, SessionShared, StorageSchema, INTERNAL_SCHEMA, SCHEMA,
};
use crate::pg::catalog::{PgCatalogSchema, PG_CATALOG};

#[derive(Debug)]
pub(crate) struct StorageCatalog {
    pub shared: Arc<SessionShared>,
}

impl CatalogProvider for StorageCatalog {
    fn schema_names(&self) -> Vec<String> {
        let mut names = vec![SCHEMA.to_string(), PG_CATALOG.to_string()];
        if let Ok(rows) = meta_rows(&self.shared.db, "schema") {
            names.extend(rows.into_iter().map(|r| r.name));
        }
        names
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        if name == PG_CATALOG {
            return Some(Arc::new(PgCatalogSchema {
                shared: self.shared.clone(),
            }));
        }
        if name == INTERNAL_SCHEMA {
            return Some(Arc::new(InternalSchema {
                shared: self.shared.clone(),
            }));
        }
        let exists = name == SCHEMA
            || meta_rows(&self.shared.db, "schema")
                .map(|rows| rows.iter().any(|r| r.name == name))
                .unwrap_or(false);
        exists.then(|| {
            Arc::new(StorageSchema {
                shared: self.shared.clone(),
                name: name.to_string(),
            }) as Arc<dyn SchemaProvider>
        })
    }
}
