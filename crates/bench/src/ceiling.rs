//! The native ceiling: a bare tokio server that frames MessagePack exactly
//! as the host does (the same `arrpc_wire::Connection`) and writes each
//! message straight back. No WebAssembly, no dispatch: what is left of the
//! host's cost once handlers cost nothing. With an acceptor it serves TLS,
//! the ceiling for the host's TLS points.

use std::net::SocketAddr;

use arrpc_wire::Connection;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

pub async fn serve(listen: SocketAddr, tls: Option<TlsAcceptor>) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    // The same line the host logs, so one parser finds either's address.
    eprintln!("ceiling listening addr={}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        match &tls {
            None => {
                tokio::spawn(echo(stream));
            }
            Some(acceptor) => {
                let handshake = acceptor.accept(stream);
                tokio::spawn(async move { echo(handshake.await?).await });
            }
        }
    }
}

/// Writes each message straight back; replies to messages read together
/// leave in one flush, as the host's do.
pub async fn echo<S: AsyncRead + AsyncWrite + Unpin>(stream: S) -> std::io::Result<()> {
    let mut conn = Connection::new(stream, 4 << 20);
    while let Ok(Some(message)) = conn.read_message().await {
        conn.write_message(&message).await?;
        while let Ok(Some(more)) = conn.try_message() {
            conn.write_message(&more).await?;
        }
        conn.flush().await?;
    }
    Ok(())
}
