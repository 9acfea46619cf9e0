//! The raw-TCP entry point (`Server::run`) through the real `echo` example.

use std::io::{Read, Write};
use std::net::TcpStream;

use prefork_testutil::{assert_all_gone, contract, server_closes, wait_until, Sig, DEADLINE};

#[test]
fn echo_workers_echo_and_stop_on_sigterm() {
    let bin = prefork_testutil::example_bin("echo");
    let mut s = contract::start(&bin, &["--shutdown-timeout-ms", "300"]);
    let workers = s.wait_ready();
    assert_eq!(workers.len(), 2, "{}", s.log());
    assert!(s.wait_log("echo worker accepting", 2), "{}", s.log());

    let mut streams: Vec<_> = (0..4)
        .map(|_| TcpStream::connect(s.addr).unwrap())
        .collect();
    for (i, stream) in streams.iter_mut().enumerate() {
        let msg = format!("hello {i}\n");
        stream.write_all(msg.as_bytes()).unwrap();
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        let mut back = vec![0u8; msg.len()];
        stream.read_exact(&mut back).unwrap();
        assert_eq!(back, msg.as_bytes());
    }

    // A connection still open at SIGTERM is closed after the drain timeout, and the workers
    // exit 0.
    let mut open = streams.pop().unwrap();
    drop(streams);
    s.signal(Sig::SIGTERM);
    assert!(server_closes(&mut open), "{}", s.log());
    let status = s.wait_exit(DEADLINE).expect("master exits");
    assert!(status.success(), "{status:?}; log:\n{}", s.log());
    assert!(
        wait_until(DEADLINE, || s.log().matches("status=exit status 0").count()
            == 2),
        "{}",
        s.log()
    );
    assert_all_gone(workers, &s.log());
}
