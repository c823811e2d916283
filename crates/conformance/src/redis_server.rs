//! A private `redis-server` for tests: started on a free port in a directory of its
//! own, restarted on the same port and data, and stopped (and its directory removed)
//! when dropped. Tests never use a Redis that happens to run on the machine.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How to install the server when it is missing.
const INSTALL: &str = "redis-server is not installed; install it (Debian/Ubuntu: `apt-get install redis-server`; \
     macOS: `brew install redis`) and run the tests again";

/// A `redis-server` this test owns.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    dir: PathBuf,
    append_only: bool,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a server that keeps nothing on disk.
    pub fn start() -> Self {
        Self::launch(false)
    }

    /// Starts a server with append-only persistence, every write synced, so that a
    /// restart loses nothing it acknowledged.
    pub fn start_persistent() -> Self {
        Self::launch(true)
    }

    fn launch(append_only: bool) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "guild-redis-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("a directory for redis-server");
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let mut server = Self {
            port,
            dir,
            append_only,
            child: None,
        };
        server.run();
        server
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server gracefully (`SIGTERM`: it writes what it must and exits).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let _ = child.wait();
        }
    }

    /// Kills the server at once (`SIGKILL`), as a crash would: only what its
    /// persistence settings had written survives.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and data, once stopped.
    pub fn restart(&mut self) {
        self.stop();
        self.run();
    }

    /// Starts it again on the same port and data after [`kill`](Self::kill).
    pub fn start_again(&mut self) {
        if self.child.is_none() {
            self.run();
        }
    }

    fn run(&mut self) {
        let mut command = Command::new("redis-server");
        command
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--protected-mode", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if self.append_only {
            command.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            command.args(["--appendonly", "no"]);
        }
        let child = match command.spawn() {
            Ok(child) => child,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => panic!("{INSTALL}"),
            Err(error) => panic!("cannot start redis-server: {error}"),
        };
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.answers() {
            assert!(
                Instant::now() < deadline,
                "redis-server on port {} did not answer within 20 s",
                self.port
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Whether it answers `PING`.
    fn answers(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
        let mut reply = [0u8; 7];
        stream.write_all(b"PING\r\n").is_ok()
            && stream.read_exact(&mut reply).is_ok()
            && &reply == b"+PONG\r\n"
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
