//! The gRPC handlers: identify the caller from its certificate, convert at the edge, delegate to
//! the coordinator. Thin on purpose.

use crate::coordinator::{CoordError, Coordinator, now_ms};
use federation::task::TaskResult;
use federation::{PROTOCOL_VERSION, SiteId};
use protocol::pb;
use protocol::pb::federation_server::Federation;
use protocol::tls::{RefusalLog, ReloadingServerTls, peer_identity};
use std::sync::Arc;
use std::time::Duration;
use tonic::{Request, Response, Status};

/// The `fedrad.v1.Federation` service.
pub struct FederationService {
    pub coordinator: Arc<Coordinator>,
    pub tls: Arc<ReloadingServerTls>,
    pub refusals: RefusalLog,
}

fn status(e: CoordError) -> Status {
    match e {
        CoordError::Version { .. } => Status::failed_precondition(e.to_string()),
        CoordError::NotEnrolled(_) => Status::permission_denied(e.to_string()),
        CoordError::Duplicate(_) => Status::already_exists(e.to_string()),
        CoordError::Setup(_) => Status::invalid_argument(e.to_string()),
        CoordError::UnknownStudy(_) => Status::not_found(e.to_string()),
        CoordError::Engine(_) => Status::invalid_argument(e.to_string()),
        CoordError::Store(_) => Status::internal(e.to_string()),
    }
}

impl FederationService {
    /// The caller's site, refusing revoked certificates and sites that are not enrolled.
    fn site<T>(&self, req: &Request<T>) -> Result<SiteId, Status> {
        let peer = req
            .remote_addr()
            .unwrap_or_else(|| std::net::SocketAddr::from(([0, 0, 0, 0], 0)));
        let refuse = |reason: String| {
            self.refusals.push(peer, reason.clone());
            Status::permission_denied(reason)
        };
        let (site, serial) = peer_identity(req).map_err(|s| refuse(s.message().to_string()))?;
        if self.tls.is_revoked(&serial) {
            return Err(refuse(format!("certificate of site {site} is revoked")));
        }
        if !self.coordinator.is_enrolled(&site) {
            return Err(refuse(format!(
                "site {site} is not enrolled with this aggregator (add it to enrolled_sites)"
            )));
        }
        Ok(site)
    }
}

#[tonic::async_trait]
impl Federation for FederationService {
    async fn handshake(
        &self,
        req: Request<pb::HandshakeRequest>,
    ) -> Result<Response<pb::HandshakeResponse>, Status> {
        let site = self.site(&req)?;
        let r = req.into_inner();
        self.coordinator
            .handshake(&site, r.protocol_version, &r.agent_version)
            .map_err(status)?;
        Ok(Response::new(pb::HandshakeResponse {
            protocol_version: PROTOCOL_VERSION,
            aggregator_version: env!("CARGO_PKG_VERSION").to_string(),
            site_id: site.to_string(),
        }))
    }

    async fn pull_work(
        &self,
        req: Request<pb::PullWorkRequest>,
    ) -> Result<Response<pb::PullWorkResponse>, Status> {
        let site = self.site(&req)?;
        let wait = Duration::from_millis(req.get_ref().wait_ms.min(30_000) as u64);
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Register for wake-ups before looking, so a change in between is not missed.
            let notified = self.coordinator.changed.notified();
            if let Some(task) = self.coordinator.pull(&site).map_err(status)? {
                let task_pb = pb::Task::from(&task);
                self.coordinator.task_sent(
                    task.study_id.as_str(),
                    prost::Message::encoded_len(&task_pb) as u64,
                );
                return Ok(Response::new(pb::PullWorkResponse {
                    task: Some(task_pb),
                }));
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Ok(Response::new(pb::PullWorkResponse { task: None }));
            }
        }
    }

    async fn push_result(
        &self,
        req: Request<pb::PushResultRequest>,
    ) -> Result<Response<pb::PushResultResponse>, Status> {
        let site = self.site(&req)?;
        let msg = req
            .into_inner()
            .result
            .ok_or_else(|| Status::invalid_argument("PushResultRequest.result is missing"))?;
        let bytes = prost::Message::encoded_len(&msg) as u64;
        let result =
            TaskResult::try_from(msg).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let accepted = self
            .coordinator
            .push(&site, result, bytes)
            .map_err(status)?;
        use federation::engine::Accepted;
        let outcome = match accepted {
            Accepted::Stored => pb::push_result_response::Outcome::Stored,
            Accepted::RoundComplete => pb::push_result_response::Outcome::RoundComplete,
            Accepted::Duplicate => pb::push_result_response::Outcome::Duplicate,
        };
        Ok(Response::new(pb::PushResultResponse {
            outcome: outcome as i32,
        }))
    }

    async fn heartbeat(
        &self,
        req: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let site = self.site(&req)?;
        self.coordinator.heartbeat(&site).map_err(status)?;
        Ok(Response::new(pb::HeartbeatResponse {
            server_time_ms: now_ms(),
        }))
    }
}
