//! A throw-away `redis-server` for tests: [`RedisServer`] (feature `testing`).
//!
//! Starts `redis-server` on a free loopback port with persistence off, and can pause
//! (`SIGSTOP`), resume, kill and restart it, for outage tests. When `redis-server` is not
//! installed, [`RedisServer::start`] fails with a message saying so: tests must not skip.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A `redis-server` child process, killed on drop.
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
}

impl RedisServer {
    /// Starts a server on a free loopback port and waits until it answers `PING`.
    pub async fn start() -> Result<Self, String> {
        let port = free_port()?;
        let mut server = Self { child: None, port };
        server.spawn().await?;
        Ok(server)
    }

    /// `redis://127.0.0.1:<port>/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Freezes the server (`SIGSTOP`): connections stay open, nothing answers.
    pub fn pause(&self) -> Result<(), String> {
        self.signal("-STOP")
    }

    /// Thaws a paused server (`SIGCONT`).
    pub fn resume(&self) -> Result<(), String> {
        self.signal("-CONT")
    }

    /// Kills the server (`SIGKILL`): connections drop, new ones are refused.
    pub fn kill(&mut self) -> Result<(), String> {
        if let Some(mut child) = self.child.take() {
            child
                .kill()
                .map_err(|e| format!("kill redis-server: {e}"))?;
            child
                .wait()
                .map_err(|e| format!("wait redis-server: {e}"))?;
        }
        Ok(())
    }

    /// Starts the server again on the same port (empty: persistence is off).
    pub async fn restart(&mut self) -> Result<(), String> {
        self.kill()?;
        self.spawn().await
    }

    /// The keys matching `pattern` (`KEYS`: for tests only).
    pub async fn keys(&self, pattern: &str) -> Result<Vec<String>, String> {
        let client = redis::Client::open(self.url()).map_err(|e| e.to_string())?;
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .map_err(|e| e.to_string())?;
        redis::cmd("KEYS")
            .arg(pattern)
            .query_async::<Vec<String>>(&mut conn)
            .await
            .map_err(|e| e.to_string())
    }

    /// Runs `FLUSHALL`.
    pub async fn flush(&self) -> Result<(), String> {
        let client = redis::Client::open(self.url()).map_err(|e| e.to_string())?;
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .map_err(|e| e.to_string())?;
        redis::cmd("FLUSHALL")
            .query_async::<()>(&mut conn)
            .await
            .map_err(|e| e.to_string())
    }

    fn signal(&self, sig: &str) -> Result<(), String> {
        let pid = self.pid().ok_or("redis-server is not running")?;
        let status = Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .map_err(|e| format!("kill {sig}: {e}"))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("kill {sig} {pid} failed: {status}"))
        }
    }

    async fn spawn(&mut self) -> Result<(), String> {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "yes",
                "--loglevel",
                "warning",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                format!(
                    "cannot start redis-server ({e}); install it (Debian: apt-get install -y \
                     redis-server) — the Redis tests do not skip"
                )
            })?;
        self.child = Some(child);
        let client = redis::Client::open(self.url()).map_err(|e| e.to_string())?;
        let mut last = String::new();
        for _ in 0..200 {
            match client.get_multiplexed_async_connection().await {
                Ok(mut conn) => match redis::cmd("PING").query_async::<String>(&mut conn).await {
                    Ok(_) => return Ok(()),
                    Err(e) => last = e.to_string(),
                },
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        Err(format!(
            "redis-server on port {} did not answer: {last}",
            self.port
        ))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // A paused server must be thawed to die promptly on some systems.
            let _ = Command::new("kill")
                .args(["-CONT", &child.id().to_string()])
                .status();
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn free_port() -> Result<u16, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("free port: {e}"))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("free port: {e}"))
}
