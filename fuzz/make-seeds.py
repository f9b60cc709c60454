#!/usr/bin/env python3
"""Writes the hand-made seed inputs under fuzz/corpus/<target>/seed-*.

Run from anywhere: `python3 fuzz/make-seeds.py`. The binary seeds of
log_entry and admin_request come from `cargo run --example make_seeds
--features node` instead (they need the real encoders).
"""
import pathlib

HERE = pathlib.Path(__file__).resolve().parent
CORPUS = HERE / "corpus"
CONFIGS = HERE.parent / "cluster-config"

# Real SMTP client transcripts (what a client sends; CRLF line ends).
TRANSCRIPTS = {
    "plain": b"EHLO client.example\r\nMAIL FROM:<alice@client.example>\r\n"
    b"RCPT TO:<bob@example.test>\r\nDATA\r\n"
    b"From: alice@client.example\r\nTo: bob@example.test\r\nSubject: hi\r\n"
    b"Message-ID: <1@client.example>\r\n\r\nHello Bob.\r\n..leading dot\r\n.\r\nQUIT\r\n",
    "pipelined-dsn": b"EHLO c.example\r\nMAIL FROM:<a@c.example> SIZE=200 BODY=8BITMIME "
    b"RET=HDRS ENVID=QQ314159\r\nRCPT TO:<b@example.test> NOTIFY=SUCCESS,FAILURE "
    b"ORCPT=rfc822;b@example.test\r\nRCPT TO:<c@example.test> NOTIFY=NEVER\r\nDATA\r\n"
    b"Subject: x\r\n\r\nbody\r\n.\r\nRSET\r\nNOOP\r\nQUIT\r\n",
    "bdat": b"EHLO c.example\r\nMAIL FROM:<a@c.example>\r\nRCPT TO:<b@example.test>\r\n"
    b"BDAT 14\r\nSubject: x\r\n\r\nBDAT 6 LAST\r\nhello\n\r\nQUIT\r\n",
    "bdat-ok": b"EHLO c.example\r\nMAIL FROM:<>\r\nRCPT TO:<b@example.test>\r\n"
    b"BDAT 17\r\nSubject: bdat\r\n\r\nBDAT 7 LAST\r\nhello\r\nQUIT\r\n",
    "smtputf8": "EHLO c.example\r\nMAIL FROM:<jöran@c.example> SMTPUTF8\r\n"
    "RCPT TO:<ü@example.test>\r\nDATA\r\nSubject: ü\r\n\r\nü\r\n.\r\nQUIT\r\n".encode(),
    "starttls": b"EHLO c.example\r\nSTARTTLS\r\nEHLO c.example\r\nMAIL FROM:<a@c.example>\r\n"
    b"RCPT TO:<b@example.test>\r\nDATA\r\nSubject: tls\r\n\r\nsecret\r\n.\r\nQUIT\r\n",
    "auth-plain": b"EHLO c.example\r\nSTARTTLS\r\nEHLO c.example\r\nAUTH PLAIN AHVzZXIAcGFzcw==\r\n"
    b"MAIL FROM:<a@c.example>\r\nRCPT TO:<x@elsewhere.example>\r\nDATA\r\nSubject: out\r\n\r\n"
    b"relayed after login\r\n.\r\nQUIT\r\n",
    "auth-login": b"EHLO c.example\r\nSTARTTLS\r\nEHLO c.example\r\nAUTH LOGIN\r\ndXNlcg==\r\n"
    b"cGFzcw==\r\nMAIL FROM:<a@c.example>\r\nRCPT TO:<x@elsewhere.example>\r\nBDAT 14 LAST\r\n"
    b"Subject: x\r\n\r\nQUIT\r\n",
    "auth-wrong": b"EHLO c.example\r\nSTARTTLS\r\nEHLO c.example\r\nAUTH PLAIN AHVzZXIAd3Jvbmc=\r\n"
    b"AUTH LOGIN dXNlcg==\r\n*\r\nAUTH PLAIN\r\n=\r\nAUTH CRAM-MD5\r\nQUIT\r\n",
    "auth-clear": b"EHLO c.example\r\nAUTH PLAIN AHVzZXIAcGFzcw==\r\nQUIT\r\n",
    "starttls-injected": b"EHLO c.example\r\nSTARTTLS\r\nMAIL FROM:<evil@x.example>\r\n"
    b"RCPT TO:<b@example.test>\r\n",
    "smuggling": b"EHLO c.example\r\nMAIL FROM:<a@c.example>\r\nRCPT TO:<b@example.test>\r\n"
    b"DATA\r\nSubject: a\r\n\r\nbody\n.\nMAIL FROM:<evil@x.example>\r\nRCPT TO:<v@example.test>\r\n"
    b"DATA\r\nSubject: smuggled\r\n\r\n.\r\n.\r\nQUIT\r\n",
    "relay-tricks": b"HELO c.example\r\nMAIL FROM:<a@c.example>\r\n"
    b"RCPT TO:<bob%evil.example@example.test>\r\nRCPT TO:<@example.test:bob@evil.example>\r\n"
    b"RCPT TO:<\"bob@evil\"@example.test>\r\nRCPT TO:<evil!bob@example.test>\r\n"
    b"RCPT TO:<bob@[192.0.2.1]>\r\nRCPT TO:<bob@localhost>\r\nRCPT TO:<postmaster>\r\n"
    b"RCPT TO:<bob@elsewhere.example>\r\nRCPT TO:<Bob@EXAMPLE.TEST.>\r\nVRFY bob\r\n"
    b"EXPN list\r\nHELP\r\nAUTH PLAIN AGJvYgBzZWNyZXQ=\r\nQUIT\r\n",
    "errors": b"DATA\r\nMAIL FROM:<a@b>\r\nEHLO\r\nFOO bar\r\nMAIL FROM:<a@c.example> X=1\r\n"
    b"RCPT TO:<b@example.test>\r\nBDAT 5\r\nabcdeBDAT x\r\n" + b"A" * 600 + b"\r\nQUIT\r\n",
}

COMMAND_LINES = [
    b"EHLO client.example\r\n",
    b"HELO [192.0.2.1]\r\n",
    b"MAIL FROM:<alice@client.example> SIZE=1000 BODY=8BITMIME SMTPUTF8 RET=FULL ENVID=a+2Bb\r\n",
    b"MAIL FROM:<>\r\n",
    b"RCPT TO:<bob@example.test> NOTIFY=SUCCESS,DELAY ORCPT=rfc822;bob+40example.test\r\n",
    b"RCPT TO:<@a.example,@b.example:bob@example.test>\r\n",
    b"RCPT TO:<\"a>b\"@example.test>\r\n",
    b"RCPT TO:<bob@[IPv6:2001:db8::1]>\r\n",
    b"RCPT TO:<bob@[192.0.2.1]> NOTIFY=NEVER\r\n",
    b"BDAT 1000 LAST\r\n",
    b"BDAT 0\r\n",
    b"STARTTLS\r\n",
    b"AUTH PLAIN AGJvYgBzZWNyZXQ=\r\n",
    b"VRFY <bob@example.test>\r\n",
    b"NOOP hello\r\n",
    b"ETRN example.test\r\n",
    b"QUIT\r\n",
]

ADDRESSES = [
    "bob@example.test",
    "Bob.Smith+tag@EXAMPLE.TEST.",
    "bob@elsewhere.example",
    "bob%evil.example@example.test",
    "evil.example!bob@example.test",
    "@relay.example:bob@evil.example",
    "\"bob@evil.example\"@example.test",
    "bob@[127.0.0.1]",
    "bob@[IPv6:::1]",
    "bob@192.0.2.1",
    "bob@localhost",
    "bob@x.localhost",
    "postmaster",
    "bob@relay.example",
    "a@b@example.test",
]

DATA = [
    b"Subject: a\r\n\r\nhello\r\n.\r\nQUIT\r\n",
    b".\r\n",
    b"a\r\n..\r\n...x\r\n.y\r\n \r\n.\r\n",
    b"body\n.\nMAIL FROM:<x@y>\r\n\r\n.\r\n",
    b"a\r.\r\nb\r\n.\r\n",
    b"a\r\n.\rb\r\n.\r\n",
    b"a\r\n\x00.\r\n.\r\n",
    b"x" * 300 + b"\r\n.\r\n",
]


def write(target, name, data):
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / f"seed-{name}").write_bytes(data)


def main():
    # session: [flags, arg, cut0..cut3, transcript]
    for name, t in TRANSCRIPTS.items():
        write("session", f"{name}-outside", bytes([0, 0, 200, 200, 200, 200]) + t)
        write("session", f"{name}-inside-chunked", bytes([1, 0, 1, 7, 13, 64]) + t)
        write("session", f"{name}-tls", bytes([2 | 16, 0, 255, 255, 255, 255]) + t)
    for name in ["auth-plain", "auth-login", "auth-wrong", "auth-clear"]:
        write("session", f"{name}-auth", bytes([2 | 16 | 128, 0, 255, 255, 255, 255])
              + TRANSCRIPTS[name])
    write("session", "starttls-real-inject", bytes([2 | 16 | 64, 0, 255, 255, 255, 255])
          + TRANSCRIPTS["starttls"])
    write("session", "starttls-garbage", bytes([2, 0, 255, 255, 255, 255])
          + TRANSCRIPTS["starttls"])
    write("session", "fail-submit", bytes([4, 0x10, 255, 255, 255, 255])
          + TRANSCRIPTS["pipelined-dsn"] * 2)
    write("session", "shutdown", bytes([8, 3, 20, 20, 20, 20]) + TRANSCRIPTS["plain"])
    write("session", "small-limits", bytes([32, 0, 255, 255, 255, 255]) + TRANSCRIPTS["plain"])

    for i, line in enumerate(COMMAND_LINES):
        write("smtp_command", f"{i:02}", line)

    for i, a in enumerate(ADDRESSES):
        write("address_policy", f"{i:02}-outside", bytes([0]) + a.encode())
        write("address_policy", f"{i:02}-inside", bytes([1]) + a.encode())
    write("address_policy", "line", bytes([2]) + b"RCPT TO:<bob@example.test> NOTIFY=NEVER")

    # data_scanner: [max_line, max_size LE, cut0..cut3, stream]
    for i, d in enumerate(DATA):
        write("data_scanner", f"{i:02}", bytes([200, 0xE8, 0x03, 3, 1, 64, 9]) + d)
        write("data_scanner", f"{i:02}-whole", bytes([0, 0xFF, 0xFF, 255, 255, 255, 255]) + d)

    for cfg in sorted(CONFIGS.glob("*/*.toml")):
        write("config", f"{cfg.parent.name}-{cfg.stem}", cfg.read_bytes())


if __name__ == "__main__":
    main()
