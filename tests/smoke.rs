mod common;
use common::TestServer;

#[test]
fn server_starts_and_answers_a_get() {
    let server = TestServer::start(2, &[]);
    let mut client = server.client();
    assert_eq!(client.get(b"missing").expect("get"), None);
}
