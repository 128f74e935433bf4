//! Arrow Flight SQL: the `/v1/sql` route for standard clients (ADBC, the
//! Arrow Flight SQL JDBC driver, hence DBeaver, Superset, pandas).
//!
//! The rules are those of `/v1/sql`: every call carries
//! `authorization: Bearer <API key>` (the REST keys and roles; an unknown
//! key is `UNAUTHENTICATED`), queries run read-only in the same DataFusion
//! session ([`SqlSession`]), the `audit` table is registered for admins only,
//! and SQL queries are counted in the same metrics. Like `/v1/sql`, queries
//! write no audit rows (the audit table records searches).
//!
//! The server keeps no state between calls: a statement's ticket and a
//! prepared statement's handle are the SQL text itself, so `GetFlightInfo`
//! only plans the query (for its schema) and `DoGet` runs it, each call
//! authenticated on its own. A ticket forged by a client therefore gains
//! nothing: it is just another query under the same key.

use std::pin::Pin;
use std::sync::{Arc, LazyLock};
use std::time::Instant;

use arrow::datatypes::SchemaRef;
use arrow::ipc::writer::IpcWriteOptions;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::flight_service_server::FlightServiceServer;
use arrow_flight::sql::metadata::{SqlInfoData, SqlInfoDataBuilder};
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest, ActionCreatePreparedStatementResult,
    Any, CommandGetSqlInfo, CommandPreparedStatementQuery, CommandPreparedStatementUpdate, CommandStatementIngest,
    CommandStatementQuery, CommandStatementUpdate, DoPutPreparedStatementResult, ProstMessageExt, SqlInfo,
    TicketStatementQuery,
};
use arrow_flight::{Action, FlightData, FlightDescriptor, FlightEndpoint, FlightInfo, IpcMessage, SchemaAsIpc, Ticket};
use futures::{Stream, StreamExt, TryStreamExt};
use osprey_core::ErrorKind;
use osprey_sql::SqlSession;
use prost::Message;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};

use crate::api::{ALL, bearer_key};
use crate::service::{Caller, Coordinator};

/// What `GetSqlInfo` answers (clients ask on connect).
static SQL_INFO: LazyLock<SqlInfoData> = LazyLock::new(|| {
    let mut b = SqlInfoDataBuilder::new();
    b.append(SqlInfo::FlightSqlServerName, "Osprey");
    b.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
    b.append(SqlInfo::FlightSqlServerArrowVersion, "59");
    b.append(SqlInfo::FlightSqlServerReadOnly, true);
    b.append(SqlInfo::FlightSqlServerSql, true);
    b.append(SqlInfo::FlightSqlServerSubstrait, false);
    b.append(SqlInfo::FlightSqlServerTransaction, 0i32); // SQL_SUPPORTED_TRANSACTION_NONE
    b.append(SqlInfo::FlightSqlServerCancel, false);
    b.build().expect("static SqlInfo data")
});

/// The Flight SQL service over one coordinator.
pub struct FlightSql {
    coordinator: Arc<Coordinator>,
}

type DoGetStream = Pin<Box<dyn Stream<Item = Result<FlightData, Status>> + Send + 'static>>;

/// Serves Flight SQL on `listener` until `shutdown` resolves.
pub async fn serve_flight_sql(
    coordinator: Arc<Coordinator>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> osprey_core::Result<()> {
    let addr = listener.local_addr().map_err(|e| osprey_core::Error::internal(e.to_string()))?;
    tracing::info!("Flight SQL listening on grpc://{addr}");
    tonic::transport::Server::builder()
        .add_service(FlightServiceServer::new(FlightSql { coordinator }))
        .serve_with_incoming_shutdown(tonic::transport::server::TcpIncoming::from(listener), shutdown)
        .await
        .map_err(|e| osprey_core::Error::internal(format!("Flight SQL server: {e}")))
}

/// An Osprey error as a gRPC status.
fn status(e: osprey_core::Error) -> Status {
    let msg = e.message().to_string();
    match e.kind() {
        ErrorKind::InvalidInput => Status::invalid_argument(msg),
        ErrorKind::NotFound => Status::not_found(msg),
        ErrorKind::AlreadyExists => Status::already_exists(msg),
        ErrorKind::Forbidden => Status::permission_denied(msg),
        ErrorKind::Storage => Status::unavailable(msg),
        ErrorKind::Corrupt | ErrorKind::Internal => Status::internal(msg),
    }
}

/// The bearer key in `authorization`, read as on the REST API.
fn bearer(metadata: &MetadataMap) -> Option<&str> {
    metadata.get("authorization").and_then(|v| v.to_str().ok()).and_then(bearer_key)
}

/// SQL text from a ticket or handle.
fn sql_text(bytes: &[u8]) -> Result<String, Status> {
    let sql = String::from_utf8(bytes.to_vec())
        .map_err(|_| Status::invalid_argument("the statement handle is not UTF-8 SQL text"))?;
    if sql.trim().is_empty() {
        return Err(Status::invalid_argument("query is empty"));
    }
    Ok(sql)
}

fn schema_bytes(schema: &SchemaRef) -> Result<bytes::Bytes, Status> {
    let IpcMessage(bytes) = SchemaAsIpc::new(schema, &IpcWriteOptions::default())
        .try_into()
        .map_err(|e: arrow::error::ArrowError| Status::internal(format!("cannot encode the schema: {e}")))?;
    Ok(bytes)
}

impl FlightSql {
    /// The caller named by the request's bearer key, allowed to run SQL.
    fn caller(&self, metadata: &MetadataMap) -> Result<Caller, Status> {
        let presented =
            bearer(metadata).ok_or_else(|| Status::unauthenticated("missing `authorization: Bearer <API key>`"))?;
        let caller = self.coordinator.caller(presented).ok_or_else(|| Status::unauthenticated("unknown API key"))?;
        caller.require(ALL, "SQL").map_err(|e| Status::permission_denied(e.message))?;
        Ok(caller)
    }

    /// The session `/v1/sql` would open for `caller`.
    async fn session(&self, caller: &Caller) -> Result<SqlSession, Status> {
        self.coordinator.sql_session(caller).await.map_err(status)
    }

    /// Plans `sql` and answers with its schema and one endpoint whose ticket
    /// is `ticket`.
    async fn plan_info(
        &self,
        metadata: &MetadataMap,
        sql: &str,
        ticket: Ticket,
        descriptor: FlightDescriptor,
    ) -> Result<Response<FlightInfo>, Status> {
        let caller = self.caller(metadata)?;
        let schema = self.session(&caller).await?.schema(sql).await.map_err(status)?;
        let info = FlightInfo::new()
            .try_with_schema(&schema)
            .map_err(|e| Status::internal(format!("cannot encode the schema: {e}")))?
            .with_endpoint(FlightEndpoint::new().with_ticket(ticket))
            .with_descriptor(descriptor)
            .with_ordered(true);
        Ok(Response::new(info))
    }

    /// Runs `sql` and streams its batches (after the schema, also when no
    /// rows come back).
    async fn run(&self, metadata: &MetadataMap, sql: &str) -> Result<Response<DoGetStream>, Status> {
        let caller = self.caller(metadata)?;
        let started = Instant::now();
        let session = self.session(&caller).await?;
        let batches = session.query(sql).await.map_err(status)?;
        // The batches' own schema when there are rows (what the encoder
        // checks them against); the planned one for an empty answer.
        let schema = match batches.first() {
            Some(b) => b.schema(),
            None => session.schema(sql).await.map_err(status)?,
        };
        self.coordinator.metrics.sql_queries.inc();
        self.coordinator.metrics.sql_latency.observe(started.elapsed());
        tracing::debug!(key = %caller.key_id, rows = batches.iter().map(|b| b.num_rows()).sum::<usize>(), "Flight SQL query");
        let stream = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .build(futures::stream::iter(batches.into_iter().map(Ok::<_, arrow_flight::error::FlightError>)))
            .map_err(Status::from);
        Ok(Response::new(stream.boxed()))
    }
}

fn read_only() -> Status {
    Status::permission_denied("Osprey SQL is read-only: Flight SQL updates, ingestion and writes are refused")
}

#[tonic::async_trait]
impl FlightSqlService for FlightSql {
    type FlightService = FlightSql;

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let sql = sql_text(query.query.as_bytes())?;
        let ticket = TicketStatementQuery { statement_handle: sql.clone().into_bytes().into() };
        let ticket = Ticket::new(ticket.as_any().encode_to_vec());
        self.plan_info(request.metadata(), &sql, ticket, request.get_ref().clone()).await
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let sql = sql_text(&ticket.statement_handle)?;
        self.run(request.metadata(), &sql).await
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let sql = sql_text(query.query.as_bytes())?;
        let caller = self.caller(request.metadata())?;
        let schema = self.session(&caller).await?.schema(&sql).await.map_err(status)?;
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: sql.into_bytes().into(),
            dataset_schema: schema_bytes(&schema)?,
            // No parameters: statements are plain SQL text.
            parameter_schema: Default::default(),
        })
    }

    async fn do_action_close_prepared_statement(
        &self,
        _query: ActionClosePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<(), Status> {
        // Handles are the SQL text: nothing is held to release.
        self.caller(request.metadata())?;
        Ok(())
    }

    async fn get_flight_info_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let sql = sql_text(&query.prepared_statement_handle)?;
        let ticket = Ticket::new(query.as_any().encode_to_vec());
        self.plan_info(request.metadata(), &sql, ticket, request.get_ref().clone()).await
    }

    async fn do_get_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let sql = sql_text(&query.prepared_statement_handle)?;
        self.run(request.metadata(), &sql).await
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.caller(request.metadata())?;
        let ticket = Ticket::new(query.as_any().encode_to_vec());
        let info = FlightInfo::new()
            .try_with_schema(query.into_builder(&SQL_INFO).schema().as_ref())
            .map_err(|e| Status::internal(format!("cannot encode the schema: {e}")))?
            .with_endpoint(FlightEndpoint::new().with_ticket(ticket))
            .with_descriptor(request.get_ref().clone());
        Ok(Response::new(info))
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.caller(request.metadata())?;
        let builder = query.into_builder(&SQL_INFO);
        let schema = builder.schema();
        let batch = builder.build();
        let stream = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .build(futures::stream::once(async { batch }))
            .map_err(Status::from);
        Ok(Response::new(stream.boxed()))
    }

    // Writes: Osprey SQL is read-only (as `/v1/sql`). Authentication comes
    // first so an unknown key learns nothing.

    async fn do_put_statement_update(
        &self,
        _ticket: CommandStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        self.caller(request.metadata())?;
        Err(read_only())
    }

    async fn do_put_statement_ingest(
        &self,
        _ticket: CommandStatementIngest,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        self.caller(request.metadata())?;
        Err(read_only())
    }

    async fn do_put_prepared_statement_query(
        &self,
        _query: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        self.caller(request.metadata())?;
        Err(Status::unimplemented("Osprey prepared statements take no parameters"))
    }

    async fn do_put_prepared_statement_update(
        &self,
        _query: CommandPreparedStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        self.caller(request.metadata())?;
        Err(read_only())
    }

    async fn do_get_fallback(&self, request: Request<Ticket>, message: Any) -> Result<Response<DoGetStream>, Status> {
        self.caller(request.metadata())?;
        Err(Status::unimplemented(format!("Osprey's Flight SQL does not serve `{}`", message.type_url)))
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}
