//! nginx as the reference row: `return 200`, access log off, 1 or 2 workers, on a loopback
//! port, run from a config written to a temporary directory — never as a system service.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use std::os::unix::process::CommandExt;

pub fn nginx_binary() -> Option<PathBuf> {
    ["/usr/sbin/nginx", "/usr/bin/nginx", "/usr/local/sbin/nginx"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

pub struct Nginx {
    child: Child,
    pub pgid: i32,
    pub addr: SocketAddr,
    dir: PathBuf,
}

impl Nginx {
    pub fn start(workers: u32) -> Result<Nginx, String> {
        let bin = nginx_binary().ok_or("nginx is not installed (apt-get install nginx)")?;
        // A free port: bind port 0, read it, release it for nginx (a tiny race, retried below).
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let dir = std::env::temp_dir().join(format!("bench-nginx-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let conf = format!(
            "worker_processes {workers};\ndaemon off;\nmaster_process on;\npid {dir}/nginx.pid;\n\
             error_log {dir}/error.log warn;\nevents {{ worker_connections 20000; }}\n\
             worker_rlimit_nofile 20000;\n\
             http {{\n  access_log off;\n  keepalive_requests 1000000;\n  keepalive_timeout 60s;\n\
             \x20 client_body_temp_path {dir}/body;\n  proxy_temp_path {dir}/proxy;\n\
             \x20 fastcgi_temp_path {dir}/fastcgi;\n  uwsgi_temp_path {dir}/uwsgi;\n  scgi_temp_path {dir}/scgi;\n\
             \x20 server {{\n    listen 127.0.0.1:{port} backlog=4096;\n    default_type text/plain;\n\
             \x20   location / {{ return 200 \"Hello, world!\\n\"; }}\n  }}\n}}\n",
            dir = dir.display()
        );
        let conf_path = dir.join("nginx.conf");
        std::fs::write(&conf_path, conf).map_err(|e| e.to_string())?;
        let child = Command::new(bin)
            .args([
                "-c",
                &conf_path.to_string_lossy(),
                "-p",
                &dir.to_string_lossy(),
            ])
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start nginx: {e}"))?;
        let pgid = child.id() as i32;
        crate::procs::register(pgid);
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let mut n = Nginx {
            child,
            pgid,
            addr,
            dir,
        };
        let t0 = Instant::now();
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if t0.elapsed() > Duration::from_secs(5) || !matches!(n.child.try_wait(), Ok(None)) {
                let log = std::fs::read_to_string(n.dir.join("error.log")).unwrap_or_default();
                return Err(format!("nginx did not start: {}", log.trim()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(n)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        crate::procs::kill_group(self.pgid);
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
