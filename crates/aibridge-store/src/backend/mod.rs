//! The two backends. Their queries are shared (`shared.rs`, compiled once per backend).

pub(crate) mod postgres;
pub(crate) mod sql;
pub(crate) mod sqlite;
mod sqlite_writer;

/// Implements [`crate::Store`] for a backend type whose `pools` field is a `shared::Pools`
/// and that has inherent `BACKEND`, `run_migrations`, `write` and `close_all` items.
macro_rules! delegate_store {
    ($ty:ty) => {
        #[async_trait::async_trait]
        impl crate::Store for $ty {
            fn backend(&self) -> &'static str {
                Self::BACKEND
            }
            async fn migrate(&self) -> Result<(), crate::StoreError> {
                self.run_migrations().await?;
                self.pools.total_unended().await
            }
            async fn ping(&self) -> Result<(), crate::StoreError> {
                self.pools.ping().await
            }
            async fn close(&self) {
                self.close_all().await
            }
            async fn create_user(
                &self,
                name: &str,
                now: crate::UnixMillis,
            ) -> Result<crate::User, crate::StoreError> {
                self.pools.create_user(name, now).await
            }
            async fn users(&self) -> Result<Vec<crate::User>, crate::StoreError> {
                self.pools.users().await
            }
            async fn create_token(
                &self,
                token: crate::NewToken,
            ) -> Result<crate::TokenInfo, crate::StoreError> {
                self.pools.create_token(token).await
            }
            async fn tokens(&self) -> Result<Vec<crate::TokenInfo>, crate::StoreError> {
                self.pools.tokens().await
            }
            async fn revoke_token(
                &self,
                id: &str,
                now: crate::UnixMillis,
            ) -> Result<bool, crate::StoreError> {
                self.pools.revoke_token(id, now).await
            }
            async fn token_by_hash(
                &self,
                secret_hash: &str,
                now: crate::UnixMillis,
            ) -> Result<Option<crate::TokenInfo>, crate::StoreError> {
                self.pools.token_by_hash(secret_hash, now).await
            }
            async fn commit(
                &self,
                batch: std::sync::Arc<crate::WriteBatch>,
            ) -> Result<(), crate::StoreError> {
                self.write(batch).await
            }
            async fn usage(
                &self,
                filter: &crate::UsageFilter,
                by: crate::GroupBy,
            ) -> Result<Vec<crate::UsageRow>, crate::StoreError> {
                self.pools.usage(filter, by).await
            }
            async fn usage_by_day(
                &self,
                filter: &crate::UsageFilter,
                by: crate::GroupBy,
            ) -> Result<Vec<crate::DailyUsageRow>, crate::StoreError> {
                self.pools.usage_by_day(filter, by).await
            }
            async fn usage_cells(
                &self,
                filter: &crate::UsageFilter,
                by: crate::GroupBy,
            ) -> Result<Vec<crate::UsageCell>, crate::StoreError> {
                self.pools.usage_cells(filter, by).await
            }
            async fn interception(
                &self,
                id: &str,
            ) -> Result<Option<crate::InterceptionDetail>, crate::StoreError> {
                self.pools.interception(id).await
            }
            async fn interceptions(
                &self,
                filter: &crate::InterceptionFilter,
            ) -> Result<crate::InterceptionPage, crate::StoreError> {
                self.pools.interceptions(filter).await
            }
            async fn served_by_key(
                &self,
                provider_name: &str,
            ) -> Result<std::collections::BTreeMap<String, i64>, crate::StoreError> {
                self.pools.served_by_key(provider_name).await
            }
        }
    };
}
pub(crate) use delegate_store;
