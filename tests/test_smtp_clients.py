"""Real SMTP clients against `tarry serve`: each is held through hundreds of
stuttered delays and still completes its dialogue (ending in our 451), and its
EHLO name and MAIL FROM show up in the CLOSE line."""

from __future__ import annotations

import re
import smtplib
import ssl
import subprocess

import pytest

from support import need, start_tarry

pytestmark = pytest.mark.realclient

DELAY = 0.01
MIN_HELD = 150 * DELAY  # a dialogue's replies are hundreds of bytes, one per delay

CONFIG = f"""
[[tarpit]]
protocol = "smtp"
listen = ["127.0.0.1:0"]
delay = {DELAY}
hostname = "mx.tarry.test"

[[tarpit]]
protocol = "smtp"
listen = ["127.0.0.1:0"]
delay = {DELAY}
hostname = "mx.tarry.test"
tls = true
"""


@pytest.fixture(scope="module")
def tarry(tmp_path_factory):
    state = tmp_path_factory.mktemp("state")
    t = start_tarry(CONFIG, env={"XDG_STATE_HOME": str(state)})
    t.port("smtp")
    yield t
    t.stop()


@pytest.fixture(scope="module")
def ports(tarry):
    return tarry.port("smtp", 0), tarry.port("smtp", 1)


def close_line(tarry, ehlo: str, timeout: float = 10.0) -> str:
    return tarry.wait_for(rf" CLOSE .* ehlo={re.escape(ehlo)}( |$)", timeout).string


def held(line: str) -> float:
    return float(re.search(r" time=(\d+\.\d+)", line).group(1))


def check_close(tarry, ehlo: str, mail_from: str, tls: bool) -> str:
    line = close_line(tarry, ehlo)
    assert f" mail_from={mail_from}" in line, line
    assert (" tls=yes" in line) == tls, line
    assert " reason=bait" in line, line  # we closed after QUIT: the client never gave up
    assert held(line) >= MIN_HELD, line
    return line


def ctx() -> ssl.SSLContext:
    c = ssl.create_default_context()
    c.check_hostname = False
    c.verify_mode = ssl.CERT_NONE  # the certificate is a generated self-signed one
    return c


def smtplib_dialogue(c: smtplib.SMTP, sender: str) -> None:
    with pytest.raises(smtplib.SMTPDataError) as e:
        c.sendmail(sender, ["victim@example.net"], b"Subject: hi\r\n\r\nbuy now\r\n")
    assert e.value.smtp_code == 451


def test_smtplib_plain(tarry, ports):
    with smtplib.SMTP("127.0.0.1", ports[0], timeout=10, local_hostname="py-plain.example") as c:
        c.ehlo()
        assert c.has_extn("starttls") and c.has_extn("size")
        smtplib_dialogue(c, "py-plain@sender.example")
    line = check_close(tarry, "py-plain.example", "py-plain@sender.example", tls=False)
    assert " rcpt_to=victim@example.net" in line


def test_smtplib_starttls(tarry, ports):
    with smtplib.SMTP("127.0.0.1", ports[0], timeout=10, local_hostname="py-tls.example") as c:
        c.ehlo()
        assert c.starttls(context=ctx())[0] == 220
        c.ehlo()
        assert not c.has_extn("starttls")
        smtplib_dialogue(c, "py-tls@sender.example")
    line = check_close(tarry, "py-tls.example", "py-tls@sender.example", tls=True)
    assert " tls_version=TLSv1.3" in line and " tls_cipher=" in line


def test_smtplib_smtp_ssl(tarry, ports):
    with smtplib.SMTP_SSL(
        "127.0.0.1", ports[1], timeout=10, local_hostname="py-ssl.example", context=ctx()
    ) as c:
        c.ehlo()
        assert not c.has_extn("starttls")
        with pytest.raises(smtplib.SMTPAuthenticationError):
            c.login("admin", "letmein")
        smtplib_dialogue(c, "py-ssl@sender.example")
    line = check_close(tarry, "py-ssl.example", "py-ssl@sender.example", tls=True)
    assert " auth_mech=" in line and " auth_user=admin" in line and "letmein" not in line


def run(args: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)


@pytest.mark.parametrize(
    "mode, flags",
    [("plain", []), ("tls", ["-tls"]), ("tlsc", ["--tls-on-connect"])],
)
def test_swaks(tarry, ports, mode, flags):
    swaks = need("swaks")
    port = ports[1] if mode == "tlsc" else ports[0]
    name, sender = f"swaks-{mode}.example", f"swaks-{mode}@sender.example"
    r = run([swaks, "--server", f"127.0.0.1:{port}", "--ehlo", name, "--from", sender,
             "--to", "victim@example.net", "--timeout", "10", *flags])  # fmt: skip
    transcript = r.stdout + r.stderr
    assert "<~* 451 4.3.0" in transcript or "<** 451 4.3.0" in transcript, transcript
    assert "221 2.0.0 Bye" in transcript, transcript
    check_close(tarry, name, sender, tls=mode != "plain")


def test_openssl_s_client_starttls(tarry, ports):
    openssl = need("openssl")
    name = "openssl-starttls.example"
    proc = subprocess.Popen(
        [openssl, "s_client", "-starttls", "smtp", "-name", name, "-crlf", "-quiet",
         "-connect", f"127.0.0.1:{ports[0]}"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdin is not None and proc.stdout is not None

        def say(line: bytes, until: bytes) -> None:
            proc.stdin.write(line + b"\n")
            proc.stdin.flush()
            while True:  # a reply arrives byte by byte; readline waits for all of it
                got = proc.stdout.readline()
                assert got, f"openssl ended before {until!r}"
                if got.startswith(until):
                    return

        say(b"EHLO " + name.encode(), b"250 ")
        say(b"MAIL FROM:<openssl@sender.example>", b"250 2.1.0")
        say(b"QUIT", b"221 ")
        proc.wait(20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    check_close(tarry, name, "openssl@sender.example", tls=True)


@pytest.mark.parametrize(
    "mode, flags",
    [("plain", []), ("starttls", ["--ssl-reqd", "-k"]), ("smtps", ["-k"])],
)
def test_curl(tarry, ports, tmp_path, mode, flags):
    curl = need("curl")
    name, sender = f"curl-{mode}.example", f"curl-{mode}@sender.example"
    scheme, port = ("smtps", ports[1]) if mode == "smtps" else ("smtp", ports[0])
    message = tmp_path / "message.txt"
    message.write_text("Subject: hello\r\n\r\nbuy now\r\n")
    r = run([curl, "-sv", "--max-time", "60", "--url", f"{scheme}://127.0.0.1:{port}/{name}",
             "--mail-from", sender, "--mail-rcpt", "victim@example.net",
             "-T", str(message), *flags])  # fmt: skip
    assert "< 451 4.3.0 Error: queue file write error" in r.stderr, r.stderr
    assert r.returncode != 0  # curl reports the refused message, as it should
    check_close(tarry, name, sender, tls=mode != "plain")


def test_bad_certificate_stops_start_up_with_one_line(tmp_path):
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    for extra, needle in [
        (f'cert = "{tmp_path}/missing.pem"', f"cert: cannot read {tmp_path}/missing.pem"),
        (f'cert = "{junk}"', f"cert: {junk} holds no PEM certificate"),
        (f'key = "{junk}"', "key: set without cert"),
    ]:
        t = start_tarry(f'[[tarpit]]\nprotocol = "smtp"\nlisten = ["127.0.0.1:0"]\n{extra}\n')
        try:
            assert t.proc.wait(20) != 0
        finally:
            t.stop()
        err = [line for line in t.err if line.strip()]
        assert len(err) == 1 and err[0].startswith("tarry: "), err
        assert needle in err[0], err
