//! Local stand-ins for the gateways: a real SMTP server (Python aiosmtpd) on loopback, and an
//! SMS gateway whose every answer the test scripts.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;

/// An aiosmtpd server writing every message it accepts to `dir` as `NNNNNN.eml`. Recipients
/// whose address starts with `reject` are refused with 550. Unless started with
/// [`SmtpServer::start_serial`] it offers PIPELINING, as production relays do, and counts the
/// transactions whose commands came pipelined.
pub struct SmtpServer {
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Child,
}

const SMTP_SCRIPT: &str = r#"
import os, sys, itertools, threading
from aiosmtpd.controller import Controller

class Recorder:
    def __init__(self, folder):
        self.folder = folder
        self.count = itertools.count()
        self.lock = threading.Lock()

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        # A client may greet more than once on a connection (after STARTTLS, or to read the
        # extensions again): the count tells how many connections were opened.
        session.host_name = hostname
        if not getattr(session, "counted", False):
            session.counted = True
            with self.lock:
                self.sessions = getattr(self, "sessions", 0) + 1
                with open(os.path.join(self.folder, "sessions"), "w") as f:
                    f.write(str(self.sessions))
        if PIPELINING:
            responses.insert(len(responses) - 1, "250-PIPELINING")
        return responses

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        # RCPT already waiting behind MAIL: the client did not wait for this answer.
        if len(server._reader._buffer) > 0:
            with self.lock:
                self.pipelined = getattr(self, "pipelined", 0) + 1
                with open(os.path.join(self.folder, "pipelined"), "w") as f:
                    f.write(str(self.pipelined))
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.startswith("reject"):
            # Like real servers, quote the address in the refusal.
            return "550 5.1.1 <%s>: no such mailbox" % address
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            n = next(self.count)
        path = os.path.join(self.folder, "%06d.eml" % n)
        with open(path + ".tmp", "wb") as f:
            f.write(envelope.original_content or envelope.content)
        os.rename(path + ".tmp", path)
        return "250 2.0.0 queued as %06d" % n

mode = sys.argv[3]
PIPELINING = sys.argv[6] == "pipelining"
options = {}
if mode != "plain":
    import ssl
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(sys.argv[4], sys.argv[5])
    if mode == "starttls":
        options = {"tls_context": context, "require_starttls": True}
    else:
        options = {"ssl_context": context}
# A loaded test machine can take longer than the default five seconds to answer the
# controller's own readiness probe.
controller = Controller(Recorder(sys.argv[2]), hostname="127.0.0.1", port=int(sys.argv[1]),
                        ready_timeout=60, **options)
controller.start()
print("ready", flush=True)
threading.Event().wait()
"#;

/// How the SMTP server talks: plain, STARTTLS required, or TLS from the first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpMode {
    Plain,
    Starttls,
    Tls,
}

impl SmtpServer {
    pub async fn start() -> Self {
        Self::start_with(SmtpMode::Plain).await
    }

    /// A server that does not offer PIPELINING: clients send one command per round trip.
    pub async fn start_serial() -> Self {
        Self::launch(SmtpMode::Plain, false).await
    }

    /// With TLS, the server presents a certificate for `localhost` from its own CA, whose PEM
    /// is [`SmtpServer::ca_file`].
    pub async fn start_with(mode: SmtpMode) -> Self {
        Self::launch(mode, true).await
    }

    /// Starts the server, trying a fresh port when a start fails: the port is chosen before
    /// the server binds it, so another test may take it in between.
    async fn launch(mode: SmtpMode, pipelining: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        if mode != SmtpMode::Plain {
            make_certificates(dir.path());
        }
        let mut failures = Vec::new();
        for _ in 0..4 {
            match Self::try_launch(dir.path(), mode, pipelining).await {
                Ok((port, child)) => return Self { port, dir, child },
                Err(why) => failures.push(why),
            }
        }
        panic!("aiosmtpd did not start: {failures:#?}");
    }

    async fn try_launch(
        dir: &Path,
        mode: SmtpMode,
        pipelining: bool,
    ) -> Result<(u16, Child), String> {
        use std::io::BufRead as _;
        let port = free_port();
        let mode_arg = match mode {
            SmtpMode::Plain => "plain",
            SmtpMode::Starttls => "starttls",
            SmtpMode::Tls => "tls",
        };
        // Refused TLS handshakes are part of the tests: their tracebacks go to a file, read
        // only when the server fails to start.
        let log = dir.join("server.log");
        let mut child = Command::new("python3")
            .args(["-c", SMTP_SCRIPT, &port.to_string()])
            .arg(dir)
            .arg(mode_arg)
            .arg(dir.join("cert.pem"))
            .arg(dir.join("key.pem"))
            .arg(if pipelining { "pipelining" } else { "serial" })
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("python3 with aiosmtpd (pip install aiosmtpd)");
        let stdout = child.stdout.take().unwrap();
        let ready = tokio::task::spawn_blocking(move || {
            std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .any(|l| l == "ready")
        });
        match tokio::time::timeout(Duration::from_secs(90), ready).await {
            Ok(Ok(true)) => Ok((port, child)),
            outcome => {
                let _ = child.kill();
                let _ = child.wait();
                let stderr = std::fs::read_to_string(&log).unwrap_or_default();
                Err(format!("port {port}: {outcome:?}\n{stderr}"))
            }
        }
    }

    /// The messages received so far, oldest first.
    pub fn messages(&self) -> Vec<String> {
        let mut names: Vec<PathBuf> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "eml"))
            .collect();
        names.sort();
        names
            .iter()
            .map(|p| std::fs::read_to_string(p).unwrap())
            .collect()
    }
}

impl SmtpServer {
    /// The PEM certificate of the CA that signed the server's certificate.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// SMTP sessions opened so far.
    pub fn sessions(&self) -> usize {
        self.tally("sessions")
    }

    /// Mail transactions whose `RCPT` was sent before `MAIL` was answered.
    pub fn pipelined(&self) -> usize {
        self.tally("pipelined")
    }

    fn tally(&self, name: &str) -> usize {
        std::fs::read_to_string(self.dir.path().join(name))
            .map(|s| s.trim().parse().unwrap())
            .unwrap_or(0)
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        drop(self.child.kill());
        drop(self.child.wait());
    }
}

/// A private CA (`ca.pem`) and a server certificate for `localhost` it signed (`cert.pem`,
/// `key.pem`).
fn make_certificates(dir: &Path) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "Reliefline test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &Issuer::new(ca, ca_key))
        .unwrap();
    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
    std::fs::write(dir.join("cert.pem"), leaf.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), leaf_key.serialize_pem()).unwrap();
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// How the fake gateway answers one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Accept,
    Status(u16),
    /// 429 with `Retry-After: secs`.
    TooMany(u64),
    /// Never answer (the client's timeout must fire).
    Hang,
    /// Drop the connection without an answer.
    Close,
}

/// One request as the gateway saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub message_id: String,
    pub to: String,
    pub text: String,
    pub kind: String,
    pub authorization: Option<String>,
    pub id_header: Option<String>,
    pub form: bool,
}

#[derive(Default)]
struct GatewayState {
    script: VecDeque<Answer>,
    seen: Vec<Seen>,
    /// Delay before answering, to widen races between dispatchers.
    delay: Duration,
}

#[derive(Clone)]
pub struct SmsGateway {
    pub addr: SocketAddr,
    state: Arc<Mutex<GatewayState>>,
    _server: Arc<tokio::task::JoinHandle<()>>,
}

impl SmsGateway {
    pub async fn start() -> Self {
        let state = Arc::new(Mutex::new(GatewayState::default()));
        let app = axum::Router::new()
            .route("/send", post(receive))
            .with_state(Arc::clone(&state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            addr,
            state,
            _server: Arc::new(server),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/send", self.addr)
    }

    /// Answer the next requests like this, in order; after the script runs out, accept.
    pub fn script(&self, answers: &[Answer]) {
        self.state
            .lock()
            .unwrap()
            .script
            .extend(answers.iter().copied());
    }

    pub fn delay(&self, delay: Duration) {
        self.state.lock().unwrap().delay = delay;
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }

    /// Requests per message id.
    pub fn counts(&self) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        for seen in self.seen() {
            *counts.entry(seen.message_id).or_default() += 1;
        }
        counts
    }
}

async fn receive(
    State(state): State<Arc<Mutex<GatewayState>>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let fields: HashMap<String, String> = if form {
        form_urlencoded::parse(&body).into_owned().collect()
    } else {
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        value
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
            .collect()
    };
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let (answer, delay) = {
        let mut state = state.lock().unwrap();
        state.seen.push(Seen {
            message_id: fields.get("message_id").cloned().unwrap_or_default(),
            to: fields.get("to").cloned().unwrap_or_default(),
            text: fields.get("text").cloned().unwrap_or_default(),
            kind: fields.get("type").cloned().unwrap_or_default(),
            authorization: header("authorization"),
            id_header: header("x-reliefline-message-id"),
            form,
        });
        (
            state.script.pop_front().unwrap_or(Answer::Accept),
            state.delay,
        )
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    match answer {
        Answer::Accept => (
            StatusCode::OK,
            axum::Json(serde_json::json!({"id": format!("gw-{}", fields.get("message_id").cloned().unwrap_or_default())})),
        )
            .into_response(),
        Answer::Status(code) => StatusCode::from_u16(code).unwrap().into_response(),
        Answer::TooMany(secs) => (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, secs.to_string())],
        )
            .into_response(),
        Answer::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            StatusCode::OK.into_response()
        }
        // A panicking handler makes hyper drop the connection without answering.
        Answer::Close => panic!("fake gateway closes the connection"),
    }
}

/// Wait until `check` holds, polling; panics with `what` after a generous timeout.
pub async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

pub fn read_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .map(|s| s.lines().map(str::to_owned).collect())
        .unwrap_or_default()
}
