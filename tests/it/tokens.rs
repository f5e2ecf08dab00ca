//! `credctl token list | revoke`, and `lock` revoking every token bound to a role so none of
//! them serves again when its role reopens.

use crate::stack::{token_from_exports, Stack};
use crate::util::stderr;

fn tokens(s: &Stack) -> Vec<serde_json::Value> {
    serde_json::from_str::<serde_json::Value>(&s.ok(&["token", "list", "--json"]))
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// The public id of a `cat1_<id>_<secret>` token.
fn id_of(token: &str) -> &str {
    token.split('_').nth(1).unwrap()
}

#[test]
fn tokens_are_listed_revoked_and_ended_by_lock() {
    let s = Stack::new("", "").with_key_and_source();
    let env_token = s.role_token("demo");
    let shell_token = token_from_exports(&s.ok(&["start"]));
    assert_eq!(s.ecs(Some(&env_token), &[]).0, 200);

    let listed = tokens(&s);
    let env = listed
        .iter()
        .find(|t| t["id"] == id_of(&env_token))
        .unwrap_or_else(|| panic!("{listed:?}"));
    assert_eq!(env["kind"], "env");
    assert_eq!(env["role"], "demo");
    assert!(env["last_used"].as_u64().is_some(), "{env}");
    let text = s.ok(&["token", "list"]);
    assert!(!text.contains(&env_token), "a secret in the listing");
    assert!(text.contains(id_of(&env_token)), "{text}");

    // Revoke: refused at once, and the id is gone.
    s.ok(&["token", "revoke", id_of(&env_token)]);
    assert_eq!(s.ecs(Some(&env_token), &[]).0, 401);
    assert!(tokens(&s).iter().all(|t| t["id"] != id_of(&env_token)));
    let again = s.credctl(&["token", "revoke", id_of(&env_token)]);
    assert!(!again.status.success());

    // Lock ends role-bound tokens for good: reopening the role does not revive them.
    let bound = s.role_token("demo");
    assert_eq!(s.ecs(Some(&bound), &[]).0, 200);
    s.ok(&["lock"]);
    s.role_token("demo");
    assert_eq!(
        s.ecs(Some(&bound), &[]).0,
        401,
        "a role-bound token outlived lock"
    );
    // A shell token stays (it follows `credctl use`), with no role current.
    assert!(tokens(&s).iter().any(|t| t["id"] == id_of(&shell_token)));
}

#[test]
fn a_token_file_never_replaces_what_is_not_an_earlier_token_file() {
    let s = Stack::new("", "").with_key_and_source();
    let live = |s: &Stack| tokens(s).len();
    let before = live(&s);
    // ~/.aws/config as the token file: refused before anything is asked of the agent.
    let cfg = s.env.home.join(".aws/config");
    let text = std::fs::read_to_string(&cfg).unwrap();
    let out = s.credctl(&["env", "demo", "--token-file", cfg.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("is not a credctl token file") && stderr(&out).contains("--force"),
        "{}",
        stderr(&out)
    );
    assert_eq!(std::fs::read_to_string(&cfg).unwrap(), text, "untouched");
    assert_eq!(live(&s), before, "no token was made");

    // A symbolic link: neither followed nor replaced without --force.
    let target = s.env.home.join("precious");
    std::fs::write(&target, "keep me").unwrap();
    let link = s.env.home.join("token-link");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let out = s.credctl(&["env", "demo", "--token-file", link.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("is a symbolic link"),
        "{}",
        stderr(&out)
    );
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());

    // A missing directory: said at once, no token made.
    let nowhere = s.env.home.join("no/such/dir/token");
    let out = s.credctl(&["env", "demo", "--token-file", nowhere.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("is not a directory"),
        "{}",
        stderr(&out)
    );
    assert_eq!(live(&s), before, "no token was made");

    // A new file, then the same file again (an earlier token file is replaced), then the link
    // with --force: the link is replaced by a file, and what it pointed to is left alone.
    let file = s.env.home.join("token");
    s.ok(&["env", "demo", "--token-file", file.to_str().unwrap()]);
    let first = std::fs::read_to_string(&file).unwrap();
    s.ok(&["env", "demo", "--token-file", file.to_str().unwrap()]);
    assert_ne!(std::fs::read_to_string(&file).unwrap(), first);
    s.ok(&[
        "env",
        "demo",
        "--token-file",
        link.to_str().unwrap(),
        "--force",
    ]);
    assert!(std::fs::symlink_metadata(&link).unwrap().is_file());
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep me");
}

/// `curl` as `cmd` runs it: the HTTP status of the ECS request with `token`.
fn curl_status(s: &Stack, mut cmd: std::process::Command, token: &str) -> String {
    let out = cmd
        .args([
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-H",
            &format!("Authorization: {token}"),
            &s.ecs_uri(),
        ])
        .output()
        .unwrap();
    crate::util::stdout(&out)
}

/// A shell's token serves that shell and its descendants only: a process outside the tree (one
/// that reparented itself away with `setsid -f`, say) gets 401 with the token in hand. A token
/// file is unbound, and `token list` says so.
#[test]
fn a_token_serves_only_the_process_tree_it_was_given_to() {
    let s = Stack::new("", "").with_key_and_source();
    // `credctl env` evaluated by this test process: it is the token's holder.
    let token = s.role_token("demo");
    assert_eq!(s.ecs(Some(&token), &[]).0, 200, "a child of the holder");
    // A grandchild, through a shell.
    let mut sh = s.env.command("sh");
    sh.args(["-c", "exec \"$@\"", "sh"]);
    assert_eq!(curl_status(&s, sh, &token), "200");
    // Reparented away: no longer a descendant of the holder.
    let out_file = s.env.home.join("away.txt");
    let away = s
        .env
        .command("setsid")
        .args([
            "-f",
            "sh",
            "-c",
            &format!(
                "curl -s -o /dev/null -w '%{{http_code}}' -H 'Authorization: {token}' {} > {}.tmp; mv {}.tmp {}",
                s.ecs_uri(),
                out_file.display(),
                out_file.display(),
                out_file.display()
            ),
        ])
        .status()
        .unwrap();
    assert!(away.success());
    crate::util::wait_until(std::time::Duration::from_secs(10), || out_file.exists())
        .expect("the reparented curl ran");
    assert_eq!(std::fs::read_to_string(&out_file).unwrap(), "401");
    let status: serde_json::Value = serde_json::from_str(&s.ok(&["status", "--json"])).unwrap();
    assert_eq!(status["tokens_refused_elsewhere"], 1);
    let audit = s.env.home.join(".local/state/credagent/audit.jsonl");
    crate::util::wait_until(std::time::Duration::from_secs(10), || {
        std::fs::read_to_string(&audit)
            .unwrap_or_default()
            .contains("token_elsewhere")
    })
    .expect("the refusal is audited");

    // The listing names each token's holder; a token file's token is unbound.
    let file = s.env.home.join("ide.token");
    s.ok(&["env", "demo", "--token-file", file.to_str().unwrap()]);
    let listed = tokens(&s);
    let holder_of = |id: &str| {
        listed
            .iter()
            .find(|t| t["id"] == id)
            .map(|t| t["holder"].clone())
            .unwrap()
    };
    assert!(
        holder_of(id_of(&token))
            .as_str()
            .is_some_and(|h| h.starts_with(&format!("pid {} ", std::process::id()))),
        "{listed:?}"
    );
    let file_token = std::fs::read_to_string(&file).unwrap();
    assert!(holder_of(id_of(file_token.trim())).is_null(), "{listed:?}");
    assert!(s.ok(&["token", "list"]).contains("UNBOUND"));
}

/// A token is given to the requester or to one of its ancestors, never to another process.
#[test]
fn a_token_cannot_be_given_to_a_process_outside_the_requesters_ancestry() {
    let s = Stack::new("", "").with_key_and_source();
    let mut other = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    let out = s
        .env
        .command(crate::util::bin("credctl"))
        .env("CREDCTL_TOKEN_HOLDER", other.id().to_string())
        .args(["start"])
        .output()
        .unwrap();
    other.kill().unwrap();
    other.wait().unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("nor one of its ancestors"),
        "{}",
        stderr(&out)
    );
    // `none` asks for an unbound token, which works from anywhere.
    let out = s
        .env
        .command(crate::util::bin("credctl"))
        .env("CREDCTL_TOKEN_HOLDER", "none")
        .args(["start"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let token = token_from_exports(&crate::util::stdout(&out));
    let listed = tokens(&s);
    assert!(listed
        .iter()
        .any(|t| t["id"] == id_of(&token) && t["holder"].is_null()));
}

/// An ancestor outside the requester's session (init, a service manager, a multiplexer's
/// server) would make a token good for nearly every process: refused as a holder.
#[test]
fn a_token_is_not_given_to_an_ancestor_outside_the_requesters_session() {
    let s = Stack::new("", "").with_key_and_source();
    // credctl runs in a session of its own (setsid), whose leader is a shell; the test
    // process, its ancestor, is in another session.
    let out = s
        .env
        .command("setsid")
        .args([
            "-w",
            "sh",
            "-c",
            "exec \"$0\" start",
            crate::util::bin("credctl").to_str().unwrap(),
        ])
        .env("CREDCTL_TOKEN_HOLDER", std::process::id().to_string())
        .output()
        .unwrap();
    assert!(!out.status.success(), "{}", crate::util::stdout(&out));
    assert!(
        stderr(&out).contains("outside the requester's session"),
        "{}",
        stderr(&out)
    );
}

/// A connection found in the holder's tree is checked again, with one `readlink`, at every
/// request the memo does not answer: a socket handed to a process outside the tree after its
/// first request (SCM_RIGHTS, the sender closing its copy) carries no grant.
#[test]
fn a_socket_handed_out_of_the_tree_loses_the_grant() {
    let s = Stack::new("", "").with_key_and_source();
    let token = s.role_token("demo");
    let script = r#"
import os, socket, sys, time, array
uri_host, uri_port, token = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def ask(sock):
    sock.sendall(("GET /v1/credentials HTTP/1.1\r\nHost: %s:%d\r\nAuthorization: %s\r\n\r\n" % (uri_host, uri_port, token)).encode())
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = [int(l.split(b":")[1]) for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")][0]
    while len(body) < length:
        body += sock.recv(65536)
    return head.split(b" ")[1].decode()
parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
pid = os.fork()
if pid == 0:
    # The outsider: leaves the tree (a new session, its parent gone), then receives the socket.
    os.setsid()
    if os.fork() != 0:
        os._exit(0)
    parent.close()
    msg, anc, flags, addr = child.recvmsg(1, socket.CMSG_LEN(4))
    fd = array.array("i", anc[0][2][:4])[0]
    time.sleep(1.5)  # past the connection's memo of the first answer
    sock = socket.socket(fileno=fd)
    print(ask(sock), flush=True)
    os._exit(0)
child.close()
conn = socket.create_connection((uri_host, uri_port))
print(ask(conn), flush=True)
parent.sendmsg([b"x"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [conn.fileno()]))])
conn.close()
os.waitpid(pid, 0)
time.sleep(3)
"#;
    let (host, port) = s.http.rsplit_once(':').unwrap();
    let out = std::process::Command::new("python3")
        .args(["-c", script, host, port, &token])
        .output()
        .unwrap();
    let codes = crate::util::stdout(&out);
    let codes: Vec<&str> = codes.lines().collect();
    assert_eq!(codes, ["200", "401"], "{}", stderr(&out));
}
