"""The packet ring and the batched sender, in a namespace of their own: the
kernel runs the filter, fills the ring, and takes the crafted packets."""

from __future__ import annotations

import json

from netns import run_python

RING = r"""
import json, select, socket, time
from tarry.raw import bpf, ring, packet, tcp

ME = socket.inet_aton("127.0.0.1")
PEER = socket.inet_aton("127.0.0.9")
r = ring.Ring(bpf.program([2222], [ME], [], tcp.TAG))
s = ring.Sender()
poll = select.epoll()
poll.register(r.fileno(), select.EPOLLIN)

def collect(want, limit=3.0):
    got, wakes = [], 0
    end = time.monotonic() + limit
    while len(got) < want and time.monotonic() < end:
        if poll.poll(0.05):
            wakes += 1
            got += [packet.parse(p) for p in r.packets()]
    return got, wakes

# a real client's SYN (nothing listens: the kernel answers RST, which we do not see)
c = socket.socket()
c.setblocking(False)
c.connect_ex(("127.0.0.1", 2222))
syns, _ = collect(1)
c.close()
# crafted: 200 data segments in one batch, and 50 pure ACKs that must stay out
data = [packet.build(PEER, ME, 30000 + i, 2222, 1, 0x100, packet.ACK | packet.PSH, b"x%d" % i) for i in range(200)]
acks = [packet.build(PEER, ME, 30000 + i, 2222, 1, 0x100, packet.ACK) for i in range(50)]
calls0 = s.calls
sent = s.send(acks + data)
calls = s.calls - calls0
got, wakes = collect(200)
time.sleep(0.05)
extra = [packet.parse(p) for p in r.packets()]
print(json.dumps({
    "syn": [(x.dport, x.flags) for x in syns],
    "sent": sent, "calls": calls, "wakes": wakes,
    "got": sorted(x.payload.decode() for x in got + extra),
    "pure_acks": sum(1 for x in got + extra if not x.payload),
}))
"""


def test_ring_sees_syns_and_data_not_pure_acks_in_few_wakeups():
    done = run_python(RING)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["syn"] and out["syn"][0] == [2222, 2]  # a SYN to the tarpit port
    assert out["sent"] == 250 and out["calls"] == 1  # one system call for the batch
    assert out["got"] == sorted(f"x{i}" for i in range(200))
    assert out["pure_acks"] == 0
    assert out["wakes"] <= 20, out["wakes"]  # many packets per wake-up, not one each


NO_CAP = r"""
from tarry.raw import bpf, ring
for make in (lambda: ring.Ring(bpf.program([22], [], [], 0xA5)), ring.Sender):
    try:
        make()
    except ring.RingError as exc:
        print(exc)
"""


def test_without_cap_net_raw_one_clear_line_each():
    from support import need

    done = run_python(NO_CAP, need("setpriv"), "--inh-caps=-all", "--bounding-set=-all")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        'stack = "raw" needs CAP_NET_RAW to open a packet socket',
        'stack = "raw" needs CAP_NET_RAW to open a raw socket',
    ]


CHECKSUMS = r"""
import json, socket, time
from tarry.raw import packet
from tarry.raw.ring import Sender

def snmp():
    head, values = [line.split()[1:] for line in open("/proc/net/snmp") if line.startswith("Tcp:")]
    return dict(zip(head, map(int, values)))

def wait_for(counter, start, deadline=3.0):
    end = time.monotonic() + deadline
    while snmp()[counter] == start and time.monotonic() < end:
        time.sleep(0.01)
    return snmp()[counter] - start

s = Sender()
out = {}
for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
    srv = socket.socket(family)
    srv.bind((host, 5000))
    srv.listen()
    me = socket.inet_pton(family, host)
    bad = bytearray(packet.build(me, me, 40002, 5000, 1000, 0, packet.SYN, mss=536, sack_ok=True))
    bad[-12] ^= 0xFF  # in the TCP header: the checksum no longer matches
    errors = snmp()["InCsumErrors"]
    s.send([bytes(bad)])
    rejected = wait_for("InCsumErrors", errors)
    sent = snmp()["OutSegs"]
    s.send([packet.build(me, me, 40001, 5000, 1000, 0, packet.SYN, mss=536, sack_ok=True)])
    answered = wait_for("OutSegs", sent)  # the kernel took our SYN and sent a SYN-ACK
    out[host] = [rejected, answered, snmp()["InCsumErrors"] - errors]
    srv.close()
print(json.dumps(out))
"""


def test_the_kernel_accepts_our_checksums_and_rejects_a_wrong_one():
    """Loopback checks the checksums of raw-socket packets (they carry none to
    offload), so the kernel is a second, independent checker of packet.build."""
    done = run_python(CHECKSUMS)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    for host in ("127.0.0.1", "::1"):
        rejected, answered, errors = out[host]
        assert rejected == 1 and errors == 1, (host, out)  # the control: a wrong one is caught
        assert answered >= 1, (host, out)
