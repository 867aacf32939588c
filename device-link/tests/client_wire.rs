//! The client's requests as a relay sees them: an in-process mock of both services
//! checks every signature against `tidings_proto::sign`'s layouts, unseals the push
//! registration with its own key, and can answer UNAVAILABLE to exercise retries.
//! (The real relay's side of the same calls is tested end to end in `tests/tests`.)

// Test code: a failed unwrap is a failed test with its line.
#![allow(clippy::unwrap_used)]

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use tidings_device_link::{
    client::{ClientOptions, DeviceRegistration, PushService, RelayClient, RetryPolicy},
    identity::Identity,
};
use tidings_proto::{
    hash::message_hash,
    seal::unseal_registration,
    sign,
    v1::{
        DeleteRequest, DeleteResponse, GetRelayInfoRequest, RelayInfo, RetrieveRequest, RetrieveResponse,
        StoreRequest, StoreResponse, StoredMessage, SubscribeRequest, SubscribeResponse, UnsubscribeRequest,
        UnsubscribeResponse,
        mailbox_server::{Mailbox, MailboxServer},
        relay_server::{Relay, RelayServer},
    },
};
use tonic::{Code, Request, Response, Status, transport::server::TcpIncoming};
use x25519_dalek::{PublicKey, StaticSecret};

const STEP: Duration = Duration::from_secs(20);

#[derive(Default)]
struct Seen {
    registrations: Vec<(Vec<i32>, DeviceRegistration)>,
    info_calls: u32,
}

#[derive(Clone)]
struct Mock {
    secret: Arc<StaticSecret>,
    seen: Arc<Mutex<Seen>>,
    /// Calls still to answer with UNAVAILABLE.
    unavailable: Arc<AtomicU32>,
}

impl Mock {
    fn gate(&self) -> Result<(), Status> {
        let left = self.unavailable.load(Ordering::SeqCst);
        if left > 0 {
            self.unavailable.store(left - 1, Ordering::SeqCst);
            return Err(Status::unavailable("storage is not taking writes"));
        }
        Ok(())
    }
}

fn account_of(bytes: &[u8]) -> Result<[u8; 32], Status> {
    bytes
        .try_into()
        .map_err(|_| Status::invalid_argument("account: 32 bytes"))
}

fn checked(account: &[u8; 32], msg: &[u8], sig: &[u8]) -> Result<(), Status> {
    sign::verify(account, msg, sig).map_err(|e| Status::unauthenticated(e.to_string()))
}

#[tonic::async_trait]
impl Mailbox for Mock {
    async fn store(&self, req: Request<StoreRequest>) -> Result<Response<StoreResponse>, Status> {
        self.gate()?;
        let r = req.into_inner();
        let account = account_of(&r.account)?;
        if r.namespace > 9 {
            let msg = sign::store_bytes(&account, r.namespace as u32, r.ts, r.ttl_ms, &r.data);
            checked(&account, &msg, &r.signature)?;
        } else if !r.signature.is_empty() {
            return Err(Status::invalid_argument("public store carries a signature"));
        }
        Ok(Response::new(StoreResponse {
            hash: message_hash(&account, r.namespace as u32, &r.data).to_vec(),
            seq: 1,
            expires_ms: 0,
            duplicate: false,
        }))
    }

    async fn retrieve(&self, req: Request<RetrieveRequest>) -> Result<Response<RetrieveResponse>, Status> {
        self.gate()?;
        let r = req.into_inner();
        let account = account_of(&r.account)?;
        checked(
            &account,
            &sign::retrieve_bytes(&account, r.namespace as u32, r.ts),
            &r.signature,
        )?;
        Ok(Response::new(RetrieveResponse {
            messages: vec![StoredMessage {
                hash: vec![7; 32],
                seq: r.after_seq + 1,
                data: b"m".to_vec(),
                created_ms: 0,
                expires_ms: 0,
            }],
            more: false,
            remaining: 0,
        }))
    }

    async fn delete(&self, req: Request<DeleteRequest>) -> Result<Response<DeleteResponse>, Status> {
        self.gate()?;
        let r = req.into_inner();
        let account = account_of(&r.account)?;
        let msg = sign::delete_bytes(&account, r.namespace as u32, r.ts, &r.hashes);
        checked(&account, &msg, &r.signature)?;
        Ok(Response::new(DeleteResponse {
            deleted: r.hashes.len() as u32,
        }))
    }
}

#[tonic::async_trait]
impl Relay for Mock {
    async fn get_relay_info(&self, _: Request<GetRelayInfoRequest>) -> Result<Response<RelayInfo>, Status> {
        self.seen.lock().unwrap().info_calls += 1;
        Ok(Response::new(RelayInfo {
            x25519_public_key: PublicKey::from(&*self.secret).to_bytes().to_vec(),
            app_ids: vec!["app".into()],
            version: "mock".into(),
            max_message_bytes: 65_536,
            max_ttl_ms: 1,
            ..RelayInfo::default()
        }))
    }

    async fn subscribe(&self, req: Request<SubscribeRequest>) -> Result<Response<SubscribeResponse>, Status> {
        let r = req.into_inner();
        let account = account_of(&r.account)?;
        if !r.namespaces.windows(2).all(|w| w[0] < w[1]) {
            return Err(Status::invalid_argument("namespaces: strictly ascending"));
        }
        let ns: Vec<u32> = r.namespaces.iter().map(|n| *n as u32).collect();
        let msg = sign::subscribe_bytes(&account, r.ts, r.want_data, &ns, &r.sealed);
        checked(&account, &msg, &r.signature)?;
        let reg = unseal_registration(&self.secret, &account, &r.sealed)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        self.seen.lock().unwrap().registrations.push((r.namespaces, reg));
        Ok(Response::new(SubscribeResponse {
            added: true,
            expires_ms: 42,
        }))
    }

    async fn unsubscribe(
        &self,
        req: Request<UnsubscribeRequest>,
    ) -> Result<Response<UnsubscribeResponse>, Status> {
        let r = req.into_inner();
        let account = account_of(&r.account)?;
        let device_id: [u8; 16] = r
            .device_id
            .as_slice()
            .try_into()
            .map_err(|_| Status::invalid_argument("device_id: 16 bytes"))?;
        checked(
            &account,
            &sign::unsubscribe_bytes(&account, &device_id, r.ts),
            &r.signature,
        )?;
        Ok(Response::new(UnsubscribeResponse { removed: true }))
    }
}

async fn start(unavailable: u32) -> (Mock, SocketAddr) {
    let mock = Mock {
        secret: Arc::new(StaticSecret::from([11u8; 32])),
        seen: Arc::default(),
        unavailable: Arc::new(AtomicU32::new(unavailable)),
    };
    let incoming = TcpIncoming::bind(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
    let addr = incoming.local_addr().unwrap();
    let server = tonic::transport::Server::builder()
        .add_service(MailboxServer::new(mock.clone()))
        .add_service(RelayServer::new(mock.clone()));
    tokio::spawn(server.serve_with_incoming(incoming));
    (mock, addr)
}

async fn client(addr: SocketAddr, retry: RetryPolicy) -> RelayClient {
    let options = ClientOptions {
        retry,
        ..ClientOptions::default()
    };
    tokio::time::timeout(STEP, RelayClient::connect_with(&addr.to_string(), options))
        .await
        .unwrap()
        .unwrap()
}

fn quick_retries(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(5),
    }
}

#[tokio::test]
async fn every_signed_request_verifies_at_the_relay() {
    let (_mock, addr) = start(0).await;
    let c = client(addr, RetryPolicy::default()).await;
    let me = Identity::create();
    let run = async {
        c.store(&me.account(), 0, b"open", 20_000).await.unwrap();
        c.store_owned(&me, 12, b"owned", 20_000).await.unwrap();
        let page = c.retrieve(&me, 12, 5, 10, 0).await.unwrap();
        assert_eq!(page.messages[0].seq, 6);
        assert_eq!(c.delete(&me, 12, &[[1u8; 32], [2u8; 32]]).await.unwrap(), 2);
        assert!(c.unsubscribe(&me, &[3; 16]).await.unwrap());
    };
    tokio::time::timeout(STEP, run).await.unwrap();
}

#[tokio::test]
async fn subscribe_seals_to_the_relay_key_once_fetched_and_signs_the_sealed_bytes() {
    let (mock, addr) = start(0).await;
    let c = client(addr, RetryPolicy::default()).await;
    let me = Identity::create();
    let reg = DeviceRegistration {
        service: PushService::Apns as i32,
        token: "tok".into(),
        app_id: "app".into(),
        push_key: vec![5; 32],
        device_id: vec![6; 16],
        ..Default::default()
    };
    let run = async {
        let resp = c
            .subscribe(&me, &[12, 0, 12, 3], true, reg.clone())
            .await
            .unwrap();
        assert!(resp.added);
        c.subscribe(&me, &[1], false, reg.clone()).await.unwrap();
    };
    tokio::time::timeout(STEP, run).await.unwrap();
    let seen = mock.seen.lock().unwrap();
    assert_eq!(seen.info_calls, 1, "the relay key is cached");
    assert_eq!(seen.registrations[0], (vec![0, 3, 12], reg.clone()));
    assert_eq!(seen.registrations[1], (vec![1], reg));
}

#[tokio::test]
async fn unavailable_is_retried_then_succeeds() {
    let (mock, addr) = start(3).await;
    let c = client(addr, quick_retries(5)).await;
    let me = Identity::create();
    tokio::time::timeout(STEP, c.store_owned(&me, 10, b"x", 20_000))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(mock.unavailable.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn unavailable_past_the_attempt_budget_is_reported_with_its_message() {
    let (mock, addr) = start(10).await;
    let c = client(addr, quick_retries(3)).await;
    let me = Identity::create();
    let err = tokio::time::timeout(STEP, c.retrieve(&me, 0, 0, 0, 0))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.code(), Some(Code::Unavailable));
    assert!(err.to_string().contains("not taking writes"), "{err}");
    assert_eq!(
        mock.unavailable.load(Ordering::SeqCst),
        7,
        "exactly three attempts"
    );
}
