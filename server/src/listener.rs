//! The plain-TCP listener: every accepted socket stays reachable by its address pair, so a
//! WebSocket upgraded on it can be taken over from the HTTP stack and read and written directly
//! rather than through the stack's layers of boxed, split IO.

use std::{
    io,
    net::{Shutdown, SocketAddr},
    pin::Pin,
    sync::{Arc, Weak},
    task::{Context, Poll, ready},
};

use dashmap::DashMap;
use poem::{
    listener::{Acceptor, Listener, TcpAcceptor, TcpListener},
    web::{LocalAddr, RemoteAddr},
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpStream, ToSocketAddrs},
};

/// The sockets accepted and still open, by (local, remote) address: one TCP connection each.
#[derive(Default)]
pub struct DirectSockets(DashMap<(SocketAddr, SocketAddr), Weak<TcpStream>>);

impl DirectSockets {
    /// The socket a request arrived on, when it came through a [`DirectListener`].
    pub fn find(&self, local: &LocalAddr, remote: &RemoteAddr) -> Option<Arc<TcpStream>> {
        let key = (*local.as_socket_addr()?, *remote.as_socket_addr()?);
        self.0.get(&key)?.upgrade()
    }
}

/// A TCP listener whose sockets are kept in a [`DirectSockets`].
pub struct DirectListener<T> {
    tcp: TcpListener<T>,
    sockets: Arc<DirectSockets>,
}

impl<T: ToSocketAddrs + Send> DirectListener<T> {
    pub fn bind(addr: T, sockets: Arc<DirectSockets>) -> Self {
        DirectListener { tcp: TcpListener::bind(addr), sockets }
    }
}

impl<T: ToSocketAddrs + Send> Listener for DirectListener<T> {
    type Acceptor = DirectAcceptor;

    async fn into_acceptor(self) -> io::Result<DirectAcceptor> {
        let tcp = self.tcp.into_acceptor().await?;
        Ok(DirectAcceptor { tcp, sockets: self.sockets })
    }
}

pub struct DirectAcceptor {
    tcp: TcpAcceptor,
    sockets: Arc<DirectSockets>,
}

impl Acceptor for DirectAcceptor {
    type Io = SharedTcp;

    fn local_addr(&self) -> Vec<LocalAddr> {
        self.tcp.local_addr()
    }

    async fn accept(
        &mut self,
    ) -> io::Result<(SharedTcp, LocalAddr, RemoteAddr, poem::http::uri::Scheme)> {
        loop {
            let (stream, _, remote, scheme) = self.tcp.accept().await?;
            // The connection's own local address (not the listener's, which may be 0.0.0.0):
            // with the remote one it names this connection alone.
            let (Ok(local), Some(remote_socket)) = (stream.local_addr(), remote.as_socket_addr())
            else {
                continue;
            };
            // Frames are written whole; Nagle would hold a frame back while one is unacked.
            if let Err(err) = stream.set_nodelay(true) {
                tracing::debug!(%err, "cannot set TCP_NODELAY");
            }
            let key = (local, *remote_socket);
            let stream = Arc::new(stream);
            self.sockets.0.insert(key, Arc::downgrade(&stream));
            let io = SharedTcp { stream, key, sockets: self.sockets.clone() };
            return Ok((io, LocalAddr(local.into()), remote, scheme));
        }
    }
}

/// An accepted socket as the HTTP stack's IO. Reads and writes go through `&TcpStream`, so
/// others holding the socket (a WebSocket's outlet) may write to it too, in turns.
pub struct SharedTcp {
    stream: Arc<TcpStream>,
    key: (SocketAddr, SocketAddr),
    sockets: Arc<DirectSockets>,
}

impl Drop for SharedTcp {
    fn drop(&mut self) {
        self.sockets
            .0
            .remove_if(&self.key, |_, socket| socket.ptr_eq(&Arc::downgrade(&self.stream)));
    }
}

impl SharedTcp {
    /// Polls a non-blocking `attempt` on the socket until it does not block, waiting for
    /// `ready` (the socket's readiness in one direction) in between.
    fn poll_io<T>(
        &self,
        cx: &mut Context<'_>,
        ready: fn(&TcpStream, &mut Context<'_>) -> Poll<io::Result<()>>,
        mut attempt: impl FnMut(&TcpStream) -> io::Result<T>,
    ) -> Poll<io::Result<T>> {
        loop {
            ready!(ready(&self.stream, cx))?;
            match attempt(&self.stream) {
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => continue,
                result => return Poll::Ready(result),
            }
        }
    }
}

impl AsyncRead for SharedTcp {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let read = ready!(self.poll_io(cx, TcpStream::poll_read_ready, |stream| {
            stream.try_read(buf.initialize_unfilled())
        }))?;
        buf.advance(read);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for SharedTcp {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_io(cx, TcpStream::poll_write_ready, |stream| stream.try_write(buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.poll_io(cx, TcpStream::poll_write_ready, |stream| stream.try_write_vectored(bufs))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(socket2::SockRef::from(&*self.stream).shutdown(Shutdown::Write))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use poem::listener::{Acceptor, Listener};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn an_accepted_socket_is_found_by_its_addresses_until_it_is_dropped() {
        let sockets = Arc::new(DirectSockets::default());
        let listener = DirectListener::bind("127.0.0.1:0", sockets.clone());
        let mut acceptor = listener.into_acceptor().await.unwrap();
        let addr = *acceptor.local_addr()[0].as_socket_addr().unwrap();
        let mut client = TcpStream::connect(addr).await.unwrap();
        let (mut io, local, remote, _) = acceptor.accept().await.unwrap();
        assert_eq!(remote.as_socket_addr(), Some(&client.local_addr().unwrap()));

        // A write straight to the found socket and one through the IO both arrive, in order.
        let direct = sockets.find(&local, &remote).expect("the accepted socket");
        direct.try_write(b"direct ").unwrap();
        io.write_all(b"through the io").await.unwrap();
        let mut received = vec![0; 21];
        client.read_exact(&mut received).await.unwrap();
        assert_eq!(received, b"direct through the io");
        client.write_all(b"ping").await.unwrap();
        let mut read = [0; 4];
        io.read_exact(&mut read).await.unwrap();
        assert_eq!(&read, b"ping");

        drop(io);
        assert!(sockets.0.is_empty(), "forgotten once the HTTP stack drops the connection");
        assert!(sockets.find(&local, &remote).is_none());
        drop(direct);
    }
}
