//! Network failures as people read them.
//!
//! The Milvus client (tonic over hyper) and the S3 store (the AWS SDK over hyper) wrap the same few
//! socket errors in layers that say little on their own ("transport error", "dispatch failure",
//! "connection error"). This is the one place that digs the socket's own cause out of such a
//! source chain and words it.

use std::error::Error;
use std::io;

/// Every error of a source chain, outermost first.
pub fn chain<'a>(
    err: &'a (dyn Error + 'static),
) -> impl Iterator<Item = &'a (dyn Error + 'static)> {
    std::iter::successors(Some(err), |&e| e.source())
}

/// The first `io::Error` of a chain: the socket's own account of what happened.
pub fn io_error<'a>(err: &'a (dyn Error + 'static)) -> Option<&'a io::Error> {
    chain(err).find_map(|e| e.downcast_ref::<io::Error>())
}

/// The innermost message of a chain: the outer layers only say which layer failed.
pub fn innermost(err: &(dyn Error + 'static)) -> String {
    chain(err).last().map(|e| e.to_string()).unwrap_or_default()
}

/// A socket error in a few words: "connection refused" rather than the OS's
/// "Connection refused (os error 111)" under three layers of "transport error".
pub fn describe(io: &io::Error) -> String {
    use io::ErrorKind::*;
    match io.kind() {
        ConnectionRefused => "connection refused".into(),
        ConnectionReset => "connection reset".into(),
        ConnectionAborted => "connection aborted".into(),
        // Writing to, or reading from, a connection the other side has closed.
        BrokenPipe | UnexpectedEof => "the connection was closed by the other side".into(),
        TimedOut => "connection timed out".into(),
        HostUnreachable => "host unreachable".into(),
        NetworkUnreachable => "network unreachable".into(),
        AddrNotAvailable => "address not available".into(),
        // getaddrinfo failures have no kind of their own (`Uncategorized` is unstable); their
        // text is fixed by the standard library.
        _ if io.to_string().contains("failed to lookup address") => {
            format!("the host name does not resolve ({io})")
        }
        _ => io.to_string(),
    }
}

/// The cause of a failure below the protocol: the socket's error when there is one, else the
/// innermost message.
pub fn cause(err: &(dyn Error + 'static)) -> String {
    match io_error(err) {
        Some(io) => describe(io),
        None => innermost(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Layer(io::Error);
    impl std::fmt::Display for Layer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("transport error")
        }
    }
    impl Error for Layer {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn the_socket_cause_is_found_under_the_layers() {
        let e = Layer(io::Error::from(io::ErrorKind::ConnectionRefused));
        assert_eq!(cause(&e), "connection refused");
        let e = Layer(io::Error::other(
            "failed to lookup address information: Name or service not known",
        ));
        assert_eq!(
            cause(&e),
            "the host name does not resolve (failed to lookup address information: Name or \
             service not known)"
        );
        let e = Layer(io::Error::from(io::ErrorKind::BrokenPipe));
        assert_eq!(cause(&e), "the connection was closed by the other side");
    }

    #[test]
    fn without_a_socket_error_the_innermost_message_is_the_cause() {
        #[derive(Debug)]
        struct Outer(std::fmt::Error);
        impl std::fmt::Display for Outer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("dispatch failure")
            }
        }
        impl Error for Outer {
            fn source(&self) -> Option<&(dyn Error + 'static)> {
                Some(&self.0)
            }
        }
        assert_eq!(cause(&Outer(std::fmt::Error)), std::fmt::Error.to_string());
    }
}
