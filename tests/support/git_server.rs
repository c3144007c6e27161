//! Loopback smart-HTTP git server (git http-backend) for authenticated-transport tests.
//!
//! A small HTTP/1.1 server on 127.0.0.1 (std only: a listener thread and one thread per
//! connection) that requires `Authorization: Basic` with a given token as the password (401 with
//! `WWW-Authenticate: Basic` otherwise) and runs `git http-backend` as a CGI for every authorized
//! request, with pushes enabled. It counts requests and keeps a log without credentials, so tests
//! can assert that a wrong token does not cause a retry storm. Every response closes the
//! connection; libgit2 reconnects as needed.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use base64::Engine;

const HTTP_BACKEND: &str = "/usr/lib/git-core/git-http-backend";

/// Largest request body accepted (a test push is a few KiB).
const MAX_BODY: usize = 64 * 1024 * 1024;

struct State {
    root: PathBuf,
    token: String,
    requests: AtomicUsize,
    log: Mutex<Vec<String>>,
}

/// A running server; dropping it stops accepting connections.
pub struct GitHttpServer {
    addr: SocketAddr,
    state: Arc<State>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl GitHttpServer {
    /// Serves the repositories under `root` (as `http://127.0.0.1:PORT/<path under root>`) to
    /// clients that present `token` as their Basic-auth password.
    pub fn start(root: &Path, token: &str) -> GitHttpServer {
        assert!(
            Path::new(HTTP_BACKEND).exists(),
            "{HTTP_BACKEND} is missing (Debian package git)"
        );
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let addr = listener.local_addr().expect("local address");
        let state = Arc::new(State {
            root: root.to_path_buf(),
            token: token.to_string(),
            requests: AtomicUsize::new(0),
            log: Mutex::new(Vec::new()),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let accept = {
            let state = Arc::clone(&state);
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let state = Arc::clone(&state);
                    std::thread::spawn(move || {
                        if let Err(e) = serve(&state, stream) {
                            state
                                .log
                                .lock()
                                .expect("log lock")
                                .push(format!("connection error: {e}"));
                        }
                    });
                }
            })
        };
        GitHttpServer {
            addr,
            state,
            stop,
            accept: Some(accept),
        }
    }

    /// The URL of a repository under the root, e.g. `url("remote.git")`.
    pub fn url(&self, repo: &str) -> String {
        format!("http://{}/{}", self.addr, repo.trim_start_matches('/'))
    }

    /// The URL with `user:password@` in it, for tests of credentials carried by the URL.
    pub fn url_with_userinfo(&self, repo: &str, user: &str, password: &str) -> String {
        format!(
            "http://{user}:{password}@{}/{}",
            self.addr,
            repo.trim_start_matches('/')
        )
    }

    /// HTTP requests received so far (authorized or not).
    pub fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// One line per request: `METHOD /path?query (N body bytes[, chunked]) -> status` (never a
    /// header, so never a credential).
    pub fn log(&self) -> Vec<String> {
        self.state.log.lock().expect("log lock").clone()
    }
}

impl Drop for GitHttpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(handle) = self.accept.take() {
            let _ = handle.join();
        }
    }
}

struct Request {
    method: String,
    path: String,
    query: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// The body came with `Transfer-Encoding: chunked`.
    chunked: bool,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn serve(state: &State, stream: TcpStream) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let Some(request) = read_request(&mut reader, &mut writer)? else {
        return Ok(()); // closed without a request (e.g. the shutdown wake-up)
    };
    state.requests.fetch_add(1, Ordering::SeqCst);
    let target = if request.query.is_empty() {
        request.path.clone()
    } else {
        format!("{}?{}", request.path, request.query)
    };
    let (status, response) = match authorized_user(state, &request) {
        Some(user) => run_backend(state, &request, &user)?,
        None => (
            "401 Unauthorized".to_string(),
            response(
                "401 Unauthorized",
                &[("WWW-Authenticate", "Basic realm=\"git\"")],
                b"unauthorized\n",
            ),
        ),
    };
    state.log.lock().expect("log lock").push(format!(
        "{} {target} ({} body bytes{}) -> {status}",
        request.method,
        request.body.len(),
        if request.chunked { ", chunked" } else { "" }
    ));
    writer.write_all(&response)?;
    writer.flush()?;
    Ok(())
}

/// Reads one request, answering `Expect: 100-continue` and decoding a chunked body.
fn read_request(
    reader: &mut BufReader<TcpStream>,
    writer: &mut TcpStream,
) -> std::io::Result<Option<Request>> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return Err(invalid(format!("bad request line {line:?}")));
    };
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut request = Request {
        method: method.to_string(),
        path: path.to_string(),
        query: query.to_string(),
        headers: Vec::new(),
        body: Vec::new(),
        chunked: false,
    };
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 {
            return Err(invalid("connection closed in the headers".into()));
        }
        let header = header.trim_end_matches(['\r', '\n']);
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            request
                .headers
                .push((name.trim().to_string(), value.trim().to_string()));
        }
    }
    if request
        .header("Expect")
        .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
    {
        writer.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        writer.flush()?;
    }
    let chunked = request
        .header("Transfer-Encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        request.chunked = true;
        request.body = read_chunked(reader)?;
    } else if let Some(length) = request.header("Content-Length") {
        let length: usize = length
            .parse()
            .map_err(|_| invalid(format!("bad Content-Length {length:?}")))?;
        if length > MAX_BODY {
            return Err(invalid(format!("body of {length} bytes is too large")));
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body)?;
        request.body = body;
    }
    Ok(Some(request))
}

fn read_chunked(reader: &mut BufReader<TcpStream>) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut size_line = String::new();
        if reader.read_line(&mut size_line)? == 0 {
            return Err(invalid("connection closed in a chunked body".into()));
        }
        let size_hex = size_line.trim().split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_hex, 16)
            .map_err(|_| invalid(format!("bad chunk size {size_line:?}")))?;
        if size == 0 {
            // Trailers, then the empty line.
            loop {
                let mut trailer = String::new();
                if reader.read_line(&mut trailer)? == 0 || trailer.trim().is_empty() {
                    return Ok(body);
                }
            }
        }
        if body.len() + size > MAX_BODY {
            return Err(invalid("chunked body too large".into()));
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..])?;
        let mut crlf = [0u8; 2];
        reader.read_exact(&mut crlf)?;
    }
}

/// The Basic-auth user name when the password is the token.
fn authorized_user(state: &State, request: &Request) -> Option<String> {
    let value = request.header("Authorization")?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    (password == state.token).then(|| user.to_string())
}

/// Runs git-http-backend as a CGI and turns its output into an HTTP response.
fn run_backend(state: &State, request: &Request, user: &str) -> std::io::Result<(String, Vec<u8>)> {
    let mut command = Command::new(HTTP_BACKEND);
    command
        .env("GIT_PROJECT_ROOT", &state.root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("GIT_CONFIG_COUNT", "1")
        .env("GIT_CONFIG_KEY_0", "http.receivepack")
        .env("GIT_CONFIG_VALUE_0", "true")
        .env("REQUEST_METHOD", &request.method)
        .env("PATH_INFO", &request.path)
        .env("QUERY_STRING", &request.query)
        .env("CONTENT_TYPE", request.header("Content-Type").unwrap_or(""))
        .env("CONTENT_LENGTH", request.body.len().to_string())
        .env("REMOTE_USER", user)
        .env("REMOTE_ADDR", "127.0.0.1")
        .env("GATEWAY_INTERFACE", "CGI/1.1")
        .env("SERVER_PROTOCOL", "HTTP/1.1")
        .env_remove("GIT_DIR")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(encoding) = request.header("Content-Encoding") {
        command.env("HTTP_CONTENT_ENCODING", encoding);
    }
    if let Some(protocol) = request.header("Git-Protocol") {
        command.env("HTTP_GIT_PROTOCOL", protocol);
    }
    let mut child = command.spawn()?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    let body = request.body.clone();
    // Write the body from another thread: the backend may answer before reading all of it.
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(&body);
    });
    let output = child.wait_with_output()?;
    let _ = feeder.join();
    let out = output.stdout;
    let (head, body) = split_cgi(&out);
    let mut status = "200 OK".to_string();
    let mut headers = Vec::new();
    for line in String::from_utf8_lossy(head).lines() {
        let line = line.trim_end_matches('\r');
        if let Some((name, value)) = line.split_once(':') {
            let (name, value) = (name.trim(), value.trim());
            if name.eq_ignore_ascii_case("Status") {
                status = value.to_string();
            } else {
                headers.push((name.to_string(), value.to_string()));
            }
        }
    }
    if !output.status.success() && head.is_empty() {
        status = "500 Internal Server Error".to_string();
    }
    let header_refs: Vec<(&str, &str)> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    Ok((status.clone(), response(&status, &header_refs, body)))
}

/// Splits CGI output at the first empty line (`\r\n\r\n` or `\n\n`).
fn split_cgi(out: &[u8]) -> (&[u8], &[u8]) {
    for i in 0..out.len() {
        if out[i..].starts_with(b"\r\n\r\n") {
            return (&out[..i], &out[i + 4..]);
        }
        if out[i..].starts_with(b"\n\n") {
            return (&out[..i], &out[i + 2..]);
        }
    }
    (&[], out)
}

fn response(status: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status}\r\n").into_bytes();
    for (name, value) in headers {
        if name.eq_ignore_ascii_case("Content-Length") || name.eq_ignore_ascii_case("Connection") {
            continue;
        }
        out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    out.extend_from_slice(
        format!(
            "Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    out.extend_from_slice(body);
    out
}

fn invalid(message: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, message)
}
