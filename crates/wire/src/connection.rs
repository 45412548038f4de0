//! Reading and writing whole MessagePack messages on one byte stream.
//!
//! A [`Connection`] keeps a read buffer: it checks whether a whole value is
//! buffered, hands it out without copying and keeps the bytes after it for
//! the next call. Writes go through a buffer too, so a batch of replies
//! leaves in one flush.

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter};

use crate::frame::{FrameError, Scanner};

/// Why reading a message failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("connection closed in the middle of a message ({buffered} bytes buffered)")]
    ClosedMidMessage { buffered: usize },
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// A byte stream carrying back-to-back MessagePack values.
#[derive(Debug)]
pub struct Connection<S> {
    stream: BufWriter<S>,
    buffer: BytesMut,
    scanner: Scanner,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    /// Wraps `stream`; messages over `max_message` bytes are refused.
    pub fn new(stream: S, max_message: usize) -> Self {
        Connection {
            stream: BufWriter::new(stream),
            buffer: BytesMut::with_capacity(8 * 1024),
            scanner: Scanner::new(max_message),
        }
    }

    /// Reads the next whole message.
    ///
    /// `Ok(None)` means the peer closed cleanly between messages. Safe to
    /// cancel: bytes already read stay buffered for the next call.
    pub async fn read_message(&mut self) -> Result<Option<Bytes>, ReadError> {
        loop {
            if let Some(message) = self.try_message()? {
                return Ok(Some(message));
            }
            if self.buffer.capacity() - self.buffer.len() < 4096 {
                self.buffer
                    .reserve(self.buffer.len().clamp(8 * 1024, 1 << 20));
            }
            if self.stream.read_buf(&mut self.buffer).await? == 0 {
                return if self.buffer.is_empty() {
                    Ok(None)
                } else {
                    Err(ReadError::ClosedMidMessage {
                        buffered: self.buffer.len(),
                    })
                };
            }
        }
    }

    /// A whole message already buffered, if there is one; reads nothing.
    pub fn try_message(&mut self) -> Result<Option<Bytes>, FrameError> {
        if self.buffer.is_empty() {
            return Ok(None);
        }
        Ok(self
            .scanner
            .scan(&self.buffer)?
            .map(|len| self.buffer.split_to(len).freeze()))
    }

    /// Whether input is buffered beyond the messages handed out: the start
    /// of one at least.
    pub fn has_buffered(&self) -> bool {
        !self.buffer.is_empty()
    }

    /// Queues `message` for sending; [`Connection::flush`] sends it.
    pub async fn write_message(&mut self, message: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(message).await
    }

    pub async fn flush(&mut self) -> std::io::Result<()> {
        self.stream.flush().await
    }

    /// Reads and drops whatever the peer still sends, until it closes.
    ///
    /// Closing a socket with unread input resets the connection, and a
    /// reset can destroy replies the peer has not read yet; draining first
    /// lets a last reply (an error, say) arrive.
    pub async fn drain(&mut self) -> std::io::Result<()> {
        loop {
            self.buffer.clear();
            self.buffer.reserve(64 * 1024);
            if self.stream.read_buf(&mut self.buffer).await? == 0 {
                return Ok(());
            }
        }
    }

    /// The underlying stream, e.g. to read TLS session details.
    pub fn get_ref(&self) -> &S {
        self.stream.get_ref()
    }

    /// Flushes and closes the write side.
    pub async fn shutdown(&mut self) -> std::io::Result<()> {
        self.stream.shutdown().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn splits_coalesced_and_joins_fragmented_messages() {
        let (client, server) = tokio::io::duplex(64);
        let mut conn = Connection::new(server, 1 << 20);
        let writer = tokio::spawn(async move {
            let mut client = client;
            // Two whole messages in one write, then one split across writes.
            client
                .write_all(&[0x01, 0xa2, b'h', b'i', 0x92])
                .await
                .unwrap();
            client.flush().await.unwrap();
            tokio::task::yield_now().await;
            client.write_all(&[0xc0]).await.unwrap();
            client.write_all(&[0xc3]).await.unwrap();
        });
        assert_eq!(conn.read_message().await.unwrap().unwrap(), &[0x01][..]);
        assert_eq!(
            conn.read_message().await.unwrap().unwrap(),
            &[0xa2, b'h', b'i'][..]
        );
        assert_eq!(
            conn.read_message().await.unwrap().unwrap(),
            &[0x92, 0xc0, 0xc3][..]
        );
        writer.await.unwrap();
        assert!(conn.read_message().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn close_inside_a_message_is_an_error() {
        let (mut client, server) = tokio::io::duplex(64);
        let mut conn = Connection::new(server, 1 << 20);
        client.write_all(&[0x92, 0x01]).await.unwrap();
        drop(client);
        assert!(matches!(
            conn.read_message().await,
            Err(ReadError::ClosedMidMessage { buffered: 2 })
        ));
    }
}
