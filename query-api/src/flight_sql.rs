//! Arrow Flight SQL: the analyst SQL of `POST /api/sql` for BI tools and
//! drivers (ADBC, JDBC, `pyarrow.flight`), on a port of its own
//! (`api.flight_sql.listen`; off when unset).
//!
//! - **Credentials** are the API's: every call carries `authorization:
//!   Bearer <API key or JWT>` (or `x-api-key`). The handshake also takes
//!   HTTP Basic with the key as the password (any user name) — what
//!   JDBC/ADBC send for `user`/`password` — and answers with the bearer
//!   token to use, which is the credential itself: nothing is kept on the
//!   server. Refused credentials go to the organization's audit log as over
//!   HTTP.
//! - **Same sandbox and limits** as `POST /api/sql`: statements run through
//!   [`SqlEngine`] in the caller's tenant session (only its tables,
//!   read-only, the time and memory limits, the per-organization query
//!   slots) and count against the organization's request rate.
//! - **Results stream**: DoGet sends batches as the query makes them (two
//!   ahead of the client), so the server holds a few batches, not the
//!   result, and the first rows arrive before the last are made. A result
//!   that grows over `api.sql.max_result_rows`/`max_result_bytes` ends with
//!   `RESOURCE_EXHAUSTED` rather than being cut, since Flight has no way to
//!   say "truncated" that clients show: clients raise it instead of
//!   returning the rows before it. The query's deadline covers the sending,
//!   so a slow reader holds its query slot until then, no longer; a client
//!   that goes away stops the query.
//! - **Stateless**: tickets and prepared-statement handles carry the SQL
//!   (and bound parameters) themselves, so any query-api replica can serve
//!   any step, and a ticket is always run as the organization of the
//!   credential that presents it — another organization's ticket only
//!   ever reads the presenter's own tables.
//! - **Metadata** for browsing: catalog `securenet`, schema `tenant`, the
//!   record kinds as tables with their columns (`GetTables`), `GetSqlInfo`.
//!
//! Every call is metered as an `api_requests` row (method `GRPC`, route
//! the Flight SQL command), as API calls are.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use arrow::array::RecordBatch;
use arrow::datatypes::{Schema, SchemaRef};
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::{IpcWriteOptions, StreamWriter};
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::sql::metadata::{SqlInfoData, SqlInfoDataBuilder};
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult, Any, CommandGetCatalogs, CommandGetDbSchemas,
    CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables, CommandPreparedStatementQuery,
    CommandStatementQuery, DoPutPreparedStatementResult, ProstMessageExt, SqlInfo,
    TicketStatementQuery,
};
use arrow_flight::{
    FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest, HandshakeResponse, IpcMessage,
    SchemaAsIpc, Ticket,
};
use base64::Engine;
use bytes::Bytes;
use control::Principal;
use datafusion::scalar::ScalarValue;
use futures::{StreamExt, TryStreamExt};
use prost::Message;
use schemas::{RecordKind, TenantId};
use serde::{Deserialize, Serialize};
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status, Streaming};

use crate::error::ApiError;
use crate::sql::{Bound, SqlEngine, StreamEnd};
use crate::state::AppState;

/// `[api.flight_sql]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct FlightSqlConfig {
    /// Address of the Flight SQL (gRPC) listener; unset: no listener.
    pub listen: Option<SocketAddr>,
}

/// Catalog and schema the tenant's tables are in (as in the SQL session).
const CATALOG: &str = "securenet";
const DB_SCHEMA: &str = "tenant";

/// The Flight SQL service over the query API's state.
#[derive(Clone)]
pub struct FlightSql {
    state: AppState,
    sql_info: Arc<SqlInfoData>,
}

type Stream<T> = Pin<Box<dyn futures::Stream<Item = Result<T, Status>> + Send + 'static>>;

impl FlightSql {
    pub fn new(state: AppState) -> Result<Self, ApiError> {
        let mut info = SqlInfoDataBuilder::new();
        info.append(SqlInfo::FlightSqlServerName, "SecureNet");
        info.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
        info.append(SqlInfo::FlightSqlServerArrowVersion, "1.3");
        info.append(SqlInfo::FlightSqlServerReadOnly, true);
        info.append(SqlInfo::FlightSqlServerSql, true);
        info.append(SqlInfo::FlightSqlServerSubstrait, false);
        info.append(SqlInfo::FlightSqlServerTransaction, 0_i32);
        info.append(SqlInfo::FlightSqlServerCancel, false);
        info.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
        info.append(SqlInfo::SqlDdlCatalog, false);
        info.append(SqlInfo::SqlDdlSchema, false);
        info.append(SqlInfo::SqlDdlTable, false);
        let sql_info = info
            .build()
            .map_err(|e| ApiError::Internal(format!("Flight SQL info: {e}")))?;
        Ok(Self {
            state,
            sql_info: Arc::new(sql_info),
        })
    }

    /// The gRPC service, to add to a tonic server.
    pub fn into_service(self) -> FlightServiceServer<Self> {
        let max = self.state.sql.config().max_body_bytes.max(4 << 20);
        FlightServiceServer::new(self)
            .max_decoding_message_size(max)
            .max_encoding_message_size(usize::MAX)
    }

    fn engine(&self) -> &SqlEngine {
        &self.state.sql
    }

    /// The caller of `request`, within its organization's request rate.
    async fn caller<T>(
        &self,
        request: &Request<T>,
        call: &'static str,
    ) -> Result<Principal, Status> {
        let headers = request.metadata().clone().into_headers();
        match control::authenticate(&self.state.store, &headers).await {
            Ok(principal) => {
                self.state
                    .limits
                    .check(&principal.tenant)
                    .map_err(|limited| {
                        Status::resource_exhausted(ApiError::RateLimited(limited).to_string())
                    })?;
                Ok(principal)
            }
            Err(e) => {
                if let (control::Error::InvalidCredentials, Some(presented)) =
                    (&e, control::auth::presented_key(&headers))
                {
                    self.state
                        .store
                        .record_failed_authentication(presented, "GRPC", call)
                        .await;
                }
                Err(to_status(ApiError::Auth(e)))
            }
        }
    }

    /// Meters a finished call of `tenant` and passes its outcome on.
    fn metered<T>(
        &self,
        tenant: &TenantId,
        call: &'static str,
        started: Instant,
        outcome: Result<T, Status>,
    ) -> Result<T, Status> {
        if let Some(meter) = &self.state.meter {
            let status = match &outcome {
                Ok(_) => 200,
                Err(status) => http_status(status.code()),
            };
            meter.record(tenant, "GRPC", call, status, started.elapsed());
        }
        outcome
    }

    /// Plans `query` for `tenant` and answers with where to fetch it.
    async fn flight_info(
        &self,
        tenant: &TenantId,
        query: &Bound,
        ticket: Bytes,
        descriptor: FlightDescriptor,
    ) -> Result<FlightInfo, Status> {
        let (schema, _) = self
            .engine()
            .describe(tenant, query)
            .await
            .map_err(to_status)?;
        let endpoint = FlightEndpoint::new().with_ticket(Ticket::new(ticket));
        FlightInfo::new()
            .try_with_schema(&schema)
            .map_err(|e| Status::internal(e.to_string()))
            .map(|info| info.with_endpoint(endpoint).with_descriptor(descriptor))
    }

    /// Runs `query` for `tenant` and streams the result as it is made
    /// ([`SqlEngine::stream_bound`]), metering the call (`call`, begun at
    /// `started`) when it ends. A failure before the first batch (planning,
    /// limits, a slot) is the call's answer; one after it — the result
    /// growing over the row or byte limit, the deadline — ends the stream
    /// with its status, so a client never takes part of a result for all
    /// of it.
    async fn run(
        &self,
        tenant: &TenantId,
        query: Bound,
        call: &'static str,
        started: Instant,
    ) -> Result<Stream<arrow_flight::FlightData>, Status> {
        let (schema_tx, schema_rx) = tokio::sync::oneshot::channel();
        // Two batches ahead of the client: the query runs while the last
        // one is encoded and sent, and holds no more than that (8 and 32
        // were no faster: docs/benchmarks.md, "Flight SQL results
        // streamed").
        let (batches_tx, batches_rx) = tokio::sync::mpsc::channel(2);
        let (end_tx, end_rx) = tokio::sync::oneshot::channel::<Status>();
        let engine = self.state.sql.clone();
        let meter = self.state.meter.clone();
        let max_bytes = engine.config().max_result_bytes;
        let owner = tenant.clone();
        tokio::spawn(async move {
            let outcome = engine
                .stream_bound(&owner, &query, schema_tx, batches_tx)
                .await;
            let failed = match outcome {
                Ok(StreamEnd::Complete | StreamEnd::Abandoned) => None,
                Ok(StreamEnd::OverLimit { max_rows }) => Some(Status::resource_exhausted(format!(
                    "the result is over {max_rows} rows or {max_bytes} bytes \
                     (api.sql.max_result_rows or its plan's, api.sql.max_result_bytes); \
                     aggregate it or add a LIMIT"
                ))),
                Err(e) => Some(to_status(e)),
            };
            if let Some(meter) = &meter {
                let code = failed.as_ref().map_or(tonic::Code::Ok, Status::code);
                meter.record(&owner, "GRPC", call, http_status(code), started.elapsed());
            }
            if let Some(status) = failed {
                let _ = end_tx.send(status);
            }
        });
        let Ok(schema) = schema_rx.await else {
            // Ended before it was planned: its status is the answer.
            return Err(end_rx
                .await
                .unwrap_or_else(|_| Status::internal("the query ended without an answer")));
        };
        let batches = futures::stream::unfold(batches_rx, |mut rx| async move {
            rx.recv().await.map(|batch| (Ok(batch), rx))
        })
        .chain(futures::stream::once(end_rx).filter_map(|end| async move {
            end.ok()
                .map(|status| Err(arrow_flight::error::FlightError::Tonic(Box::new(status))))
        }));
        let stream = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .build(batches)
            .map_err(Status::from);
        Ok(Box::pin(stream))
    }

    /// A metadata answer (one batch) as a Flight stream.
    fn one_batch(
        schema: SchemaRef,
        batch: Result<RecordBatch, impl std::fmt::Display>,
    ) -> Result<Response<Stream<arrow_flight::FlightData>>, Status> {
        let batch = batch.map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(encode(schema, vec![batch])))
    }

    /// FlightInfo of a metadata command: the command itself is the ticket.
    fn metadata_info(
        command: impl ProstMessageExt,
        schema: &Schema,
        descriptor: FlightDescriptor,
    ) -> Result<Response<FlightInfo>, Status> {
        let ticket = Ticket::new(command.as_any().encode_to_vec());
        let info = FlightInfo::new()
            .try_with_schema(schema)
            .map_err(|e| Status::internal(e.to_string()))?
            .with_endpoint(FlightEndpoint::new().with_ticket(ticket))
            .with_descriptor(descriptor);
        Ok(Response::new(info))
    }
}

fn encode(schema: SchemaRef, batches: Vec<RecordBatch>) -> Stream<arrow_flight::FlightData> {
    let stream = FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .build(futures::stream::iter(batches.into_iter().map(Ok)))
        .map_err(Status::from);
    Box::pin(stream)
}

/// The gRPC status of an API error, by the HTTP status the API gives it.
fn to_status(e: ApiError) -> Status {
    use tonic::Code;
    let (http, _) = e.status();
    let code = match http.as_u16() {
        400 | 415 => Code::InvalidArgument,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::NotFound,
        409 => Code::Aborted,
        413 | 429 => Code::ResourceExhausted,
        // Over the query's time or resource limits.
        422 => match e {
            ApiError::QueryTimeout { .. } => Code::DeadlineExceeded,
            _ => Code::ResourceExhausted,
        },
        503 => Code::Unavailable,
        _ => Code::Internal,
    };
    Status::new(code, e.to_string())
}

/// The HTTP status a gRPC code is metered as.
fn http_status(code: tonic::Code) -> u16 {
    use tonic::Code;
    match code {
        Code::Ok => 200,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => 400,
        Code::Unauthenticated => 401,
        Code::PermissionDenied => 403,
        Code::NotFound => 404,
        Code::Aborted | Code::AlreadyExists => 409,
        Code::ResourceExhausted => 429,
        Code::DeadlineExceeded => 422,
        Code::Unimplemented => 501,
        Code::Unavailable => 503,
        _ => 500,
    }
}

/// A prepared statement's handle: the SQL and the parameters bound so far
/// (an Arrow IPC stream of one row), so no server keeps state.
#[derive(Clone, PartialEq, Message)]
struct Handle {
    #[prost(string, tag = "1")]
    sql: String,
    #[prost(bytes = "bytes", tag = "2")]
    parameters: Bytes,
}

impl Handle {
    fn decode_from(bytes: &[u8]) -> Result<Self, Status> {
        Handle::decode(bytes)
            .map_err(|_| Status::invalid_argument("not a prepared statement handle of this server"))
    }

    /// The statement with its parameters bound.
    fn bound(&self) -> Result<Bound, Status> {
        let mut query = Bound::new(self.sql.clone());
        if self.parameters.is_empty() {
            return Ok(query);
        }
        let bad = |e: &dyn std::fmt::Display| Status::invalid_argument(format!("parameters: {e}"));
        let mut reader =
            StreamReader::try_new(self.parameters.as_ref(), None).map_err(|e| bad(&e))?;
        let batch = reader
            .next()
            .ok_or_else(|| bad(&"no parameter row"))?
            .map_err(|e| bad(&e))?;
        if batch.num_rows() != 1 {
            return Err(bad(&format!(
                "{} parameter rows; bind exactly one (run the statement once per row)",
                batch.num_rows()
            )));
        }
        for column in batch.columns() {
            query
                .params
                .push(ScalarValue::try_from_array(column, 0).map_err(|e| bad(&e))?);
        }
        Ok(query)
    }
}

fn ipc_schema(schema: &Schema) -> Result<Bytes, Status> {
    let IpcMessage(bytes) = SchemaAsIpc::new(schema, &IpcWriteOptions::default())
        .try_into()
        .map_err(|e: arrow::error::ArrowError| Status::internal(e.to_string()))?;
    Ok(bytes)
}

/// The table's columns as SQL shows them: the stored schema and `date`.
fn table_schema(kind: RecordKind) -> Schema {
    let stored = schemas::schema::schema(kind);
    let mut fields: Vec<_> = stored.fields().iter().cloned().collect();
    fields.push(Arc::new(arrow::datatypes::Field::new(
        "date",
        arrow::datatypes::DataType::Date32,
        false,
    )));
    Schema::new(fields)
}

#[tonic::async_trait]
impl FlightSqlService for FlightSql {
    type FlightService = FlightSql;

    async fn do_handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Stream<HandshakeResponse>>, Status> {
        // Basic user:password → the password is the credential.
        let mut request = request;
        let basic = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Basic ")
                    .or_else(|| v.strip_prefix("basic "))
            })
            .map(str::to_owned);
        if let Some(encoded) = basic {
            // Padded (pyarrow) or not (ADBC's Go driver): both are seen.
            let lenient = base64::engine::GeneralPurpose::new(
                &base64::alphabet::STANDARD,
                base64::engine::GeneralPurposeConfig::new()
                    .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
            );
            let decoded = lenient
                .decode(encoded.trim())
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| {
                    Status::invalid_argument("authorization: Basic is not base64 of user:password")
                })?;
            let (_, secret) = decoded
                .split_once(':')
                .ok_or_else(|| Status::invalid_argument("authorization: Basic has no password"))?;
            let bearer = MetadataValue::try_from(format!("Bearer {secret}"))
                .map_err(|_| Status::invalid_argument("the password is not a valid credential"))?;
            request.metadata_mut().insert("authorization", bearer);
        }
        let principal = self.caller(&request, "Handshake").await?;
        let token = control::auth::presented_key(&request.metadata().clone().into_headers())
            .unwrap_or_default()
            .to_string();
        self.metered(&principal.tenant, "Handshake", Instant::now(), Ok(()))?;
        let answer = HandshakeResponse {
            protocol_version: 0,
            payload: Bytes::from(token.clone()),
        };
        let mut response: Response<Stream<HandshakeResponse>> =
            Response::new(Box::pin(futures::stream::iter([Ok(answer)])));
        let bearer = MetadataValue::try_from(format!("Bearer {token}"))
            .map_err(|_| Status::internal("credential not representable as metadata"))?;
        response.metadata_mut().insert("authorization", bearer);
        Ok(response)
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let started = Instant::now();
        let caller = self.caller(&request, "GetFlightInfo/Statement").await?;
        let ticket = TicketStatementQuery {
            statement_handle: Bytes::from(query.query.clone()),
        };
        let outcome = self
            .flight_info(
                &caller.tenant,
                &Bound::new(query.query),
                ticket.as_any().encode_to_vec().into(),
                request.into_inner(),
            )
            .await;
        self.metered(&caller.tenant, "GetFlightInfo/Statement", started, outcome)
            .map(Response::new)
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let started = Instant::now();
        let caller = self.caller(&request, "DoGet/Statement").await?;
        let sql = String::from_utf8(ticket.statement_handle.to_vec())
            .map_err(|_| Status::invalid_argument("the ticket is not UTF-8 SQL"))?;
        self.run(&caller.tenant, Bound::new(sql), "DoGet/Statement", started)
            .await
            .map(Response::new)
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<arrow_flight::Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let started = Instant::now();
        let caller = self.caller(&request, "CreatePreparedStatement").await?;
        let outcome = async {
            let (dataset, parameters) = self
                .engine()
                .describe(&caller.tenant, &Bound::new(query.query.clone()))
                .await
                .map_err(to_status)?;
            let handle = Handle {
                sql: query.query,
                parameters: Bytes::new(),
            };
            Ok(ActionCreatePreparedStatementResult {
                prepared_statement_handle: handle.encode_to_vec().into(),
                dataset_schema: ipc_schema(&dataset)?,
                parameter_schema: if parameters.fields().is_empty() {
                    Bytes::new()
                } else {
                    ipc_schema(&parameters)?
                },
            })
        }
        .await;
        self.metered(&caller.tenant, "CreatePreparedStatement", started, outcome)
    }

    async fn do_put_prepared_statement_query(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        let caller = self.caller(&request, "DoPut/PreparedStatement").await?;
        let started = Instant::now();
        let mut handle = Handle::decode_from(&query.prepared_statement_handle)?;
        let outcome = async {
            let max = self.engine().config().max_body_bytes;
            let batches: Vec<RecordBatch> =
                arrow_flight::decode::FlightRecordBatchStream::new_from_flight_data(
                    request
                        .into_inner()
                        .map_err(arrow_flight::error::FlightError::from),
                )
                .try_collect()
                .await
                .map_err(|e| Status::invalid_argument(format!("parameters: {e}")))?;
            let Some(first) = batches.first() else {
                return Err(Status::invalid_argument("parameters: no batch sent"));
            };
            let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
            if rows != 1 {
                return Err(Status::invalid_argument(format!(
                    "parameters: {rows} rows; bind exactly one (run the statement once per row)"
                )));
            }
            let mut ipc = Vec::new();
            {
                let mut writer = StreamWriter::try_new(&mut ipc, &first.schema())
                    .map_err(|e| Status::internal(e.to_string()))?;
                for b in &batches {
                    writer
                        .write(b)
                        .map_err(|e| Status::internal(e.to_string()))?;
                }
                writer
                    .finish()
                    .map_err(|e| Status::internal(e.to_string()))?;
            }
            if ipc.len() > max {
                return Err(Status::resource_exhausted(format!(
                    "parameters are {} bytes, over api.sql.max_body_bytes ({max})",
                    ipc.len()
                )));
            }
            handle.parameters = Bytes::from(ipc);
            // Check the values now: a bad binding fails here, not at fetch.
            handle.bound()?;
            Ok(DoPutPreparedStatementResult {
                prepared_statement_handle: Some(handle.encode_to_vec().into()),
            })
        }
        .await;
        self.metered(&caller.tenant, "DoPut/PreparedStatement", started, outcome)
    }

    async fn get_flight_info_prepared_statement(
        &self,
        command: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let started = Instant::now();
        let caller = self
            .caller(&request, "GetFlightInfo/PreparedStatement")
            .await?;
        let handle = Handle::decode_from(&command.prepared_statement_handle)?;
        let outcome = async {
            let query = handle.bound()?;
            self.flight_info(
                &caller.tenant,
                &query,
                command.as_any().encode_to_vec().into(),
                request.into_inner(),
            )
            .await
        }
        .await;
        self.metered(
            &caller.tenant,
            "GetFlightInfo/PreparedStatement",
            started,
            outcome,
        )
        .map(Response::new)
    }

    async fn do_get_prepared_statement(
        &self,
        command: CommandPreparedStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let started = Instant::now();
        let caller = self.caller(&request, "DoGet/PreparedStatement").await?;
        let handle = Handle::decode_from(&command.prepared_statement_handle)?;
        let bound = match handle.bound() {
            Ok(bound) => bound,
            Err(status) => {
                return self.metered(
                    &caller.tenant,
                    "DoGet/PreparedStatement",
                    started,
                    Err(status),
                );
            }
        };
        self.run(&caller.tenant, bound, "DoGet/PreparedStatement", started)
            .await
            .map(Response::new)
    }

    async fn do_action_close_prepared_statement(
        &self,
        _query: ActionClosePreparedStatementRequest,
        request: Request<arrow_flight::Action>,
    ) -> Result<(), Status> {
        // Nothing is held for a statement; only check who asks.
        self.caller(&request, "ClosePreparedStatement")
            .await
            .map(|_| ())
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.caller(&request, "GetFlightInfo/Catalogs").await?;
        let schema = query.into_builder().schema();
        Self::metadata_info(query, &schema, request.into_inner())
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.caller(&request, "DoGet/Catalogs").await?;
        let mut builder = query.into_builder();
        builder.append(CATALOG);
        Self::one_batch(builder.schema(), builder.build())
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.caller(&request, "GetFlightInfo/Schemas").await?;
        let schema = query.clone().into_builder().schema();
        Self::metadata_info(query, &schema, request.into_inner())
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.caller(&request, "DoGet/Schemas").await?;
        let mut builder = query.into_builder();
        builder.append(CATALOG, DB_SCHEMA);
        Self::one_batch(builder.schema(), builder.build())
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.caller(&request, "GetFlightInfo/Tables").await?;
        let schema = query.clone().into_builder().schema();
        Self::metadata_info(query, &schema, request.into_inner())
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.caller(&request, "DoGet/Tables").await?;
        let mut builder = query.into_builder();
        for kind in RecordKind::ALL {
            builder
                .append(
                    CATALOG,
                    DB_SCHEMA,
                    kind.as_str(),
                    "TABLE",
                    &table_schema(kind),
                )
                .map_err(|e| Status::internal(e.to_string()))?;
        }
        Self::one_batch(builder.schema(), builder.build())
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.caller(&request, "GetFlightInfo/TableTypes").await?;
        let schema = query.into_builder().schema();
        Self::metadata_info(query, &schema, request.into_inner())
    }

    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.caller(&request, "DoGet/TableTypes").await?;
        let mut builder = query.into_builder();
        builder.append("TABLE");
        Self::one_batch(builder.schema(), builder.build())
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.caller(&request, "GetFlightInfo/SqlInfo").await?;
        let schema = query.clone().into_builder(&self.sql_info).schema();
        Self::metadata_info(query, &schema, request.into_inner())
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.caller(&request, "DoGet/SqlInfo").await?;
        let builder = query.into_builder(&self.sql_info);
        Self::one_batch(builder.schema(), builder.build())
    }

    async fn do_get_fallback(
        &self,
        request: Request<Ticket>,
        message: Any,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.caller(&request, "DoGet").await?;
        Err(Status::unimplemented(format!(
            "ticket type {} is not served here",
            message.type_url
        )))
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}

/// Serves Flight SQL on the connections of `incoming` (plain or TLS, as
/// the caller accepts them) with `server`'s settings (the binary passes
/// the gRPC listeners' own, keep-alive included) until `shutdown`
/// completes.
pub async fn serve<I, IO, IE>(
    mut server: tonic::transport::Server,
    incoming: I,
    service: FlightSql,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error>
where
    I: futures::Stream<Item = Result<IO, IE>>,
    IO: tokio::io::AsyncRead
        + tokio::io::AsyncWrite
        + tonic::transport::server::Connected
        + Unpin
        + Send
        + 'static,
    IO::ConnectInfo: Clone + Send + Sync + 'static,
    IE: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    server
        .add_service(service.into_service())
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}
