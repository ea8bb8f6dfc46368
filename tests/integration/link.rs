//! A TCP link the tests can cut: forwards 127.0.0.1:<port> to an upstream service (the API
//! server, moto, the Google fixture) until `down()`, which closes every open connection and
//! the listening socket (connection refused), or `stall()`, after which connections are
//! accepted and never answered (a server that hangs); `up()` brings it back on the same port.
//! TLS passes through untouched: the API server's certificate names 127.0.0.1.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

pub struct Link {
    pub addr: SocketAddr,
    upstream: SocketAddr,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Link {
    pub async fn to(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let link = Self {
            addr,
            upstream,
            tasks: Arc::default(),
        };
        link.serve(listener);
        link
    }

    /// `http://127.0.0.1:9000` → the address behind it.
    pub fn parse(url: &str) -> SocketAddr {
        let hostport = url.split("://").nth(1).unwrap().split('/').next().unwrap();
        hostport.replace("localhost", "127.0.0.1").parse().unwrap()
    }

    pub fn url(&self, scheme: &str) -> String {
        format!("{scheme}://{}", self.addr)
    }

    fn serve(&self, listener: TcpListener) {
        let (upstream, tasks) = (self.upstream, self.tasks.clone());
        let accept = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                let conn = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                tasks.lock().unwrap().push(conn);
            }
        });
        self.tasks.lock().unwrap().push(accept);
    }

    pub fn down(&self) {
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
    }

    /// Open connections are closed; new ones are accepted and held open, unanswered.
    pub async fn stall(&self) {
        self.down();
        let listener = self.bind().await;
        let hold = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((inbound, _)) = listener.accept().await {
                held.push(inbound);
            }
        });
        self.tasks.lock().unwrap().push(hold);
    }

    pub async fn up(&self) {
        self.down();
        let listener = self.bind().await;
        self.serve(listener);
    }

    async fn bind(&self) -> TcpListener {
        loop {
            match TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
            }
        }
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.down();
    }
}
