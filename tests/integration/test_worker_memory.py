"""The worker's memory (issue 12 item 6, bench row (e)): a `pingvas worker` that talks plain HTTP to
its server and its image store maps none of the libraries it does not use. libcurl (with OpenSSL's
initialisation, GnuTLS through librtmp, Kerberos, LDAP), libmicrohttpd, SQLite, libpq, hiredis and
libwebsockets are loaded on first use (src/lib/lazylib.h), so a worker that ran jobs end to end
has none of them in /proc/PID/maps, while the server has the ones it serves with. Outside the
sanitizer build, its peak RSS (VmHWM) after those jobs is at most the 10 MB target."""
import os
import re

import pv

# What a plain-HTTP worker must not map: the lazily loaded libraries and what only they bring.
NOT_IN_WORKER = ["libcurl", "libmicrohttpd", "libsqlite3", "libpq", "libhiredis",
                 "libwebsockets", "libgnutls", "libssl", "librtmp", "libkrb5", "libldap",
                 "libssh2", "libnghttp2", "libp11-kit"]
TARGET_KB = 10 * 1024


def mapped_libraries(pid):
    """The basenames of the shared objects mapped into pid."""
    libs = set()
    with open(f"/proc/{pid}/maps") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 6 and ".so" in parts[5]:
                libs.add(os.path.basename(parts[5]))
    return libs


def status_kb(pid, field):
    with open(f"/proc/{pid}/status") as f:
        m = re.search(rf"^{field}:\s+(\d+) kB", f.read(), re.M)
    return int(m.group(1))


def loaded(libs, prefix):
    return sorted(lib for lib in libs if lib.startswith(prefix + ".") or lib.startswith(prefix + "-"))


@pv.clean_exit
def test_worker_maps_only_what_it_uses(env):
    srv = env.start_server()
    tok = env.add_user("mem", credits=1000000)
    w = env.start_worker("--time-scale", "0")
    ids = [env.create(tok, {"prompt": f"memory {i}", "width": 64, "height": 64, "steps": 1}
                      ).json()["id"] for i in range(20)]
    for jid in ids:
        j = env.wait_status(tok, jid, "completed")
    # the image went through the worker's upload path (to the server, or presigned to S3)
    assert pv.png_size(pv.image_bytes(env, tok, j["image_url"])) == (64, 64)
    libs = mapped_libraries(w.pid)
    found = {p: loaded(libs, p) for p in NOT_IN_WORKER if loaded(libs, p)}
    assert not found, f"the worker maps libraries it does not use: {found}"
    # the check reads the maps right: the server has loaded what it serves with
    server_libs = mapped_libraries(srv.pid)
    store = "libpq" if env.stack == "production" else "libsqlite3"
    assert loaded(server_libs, "libmicrohttpd") and loaded(server_libs, store), server_libs
    hwm = status_kb(w.pid, "VmHWM")
    if any(lib.startswith("libasan") for lib in libs):
        print(f"worker VmHWM {hwm} kB (sanitizer build: not held to {TARGET_KB} kB)")
    else:
        assert hwm <= TARGET_KB, f"worker VmHWM {hwm} kB over {TARGET_KB} kB; maps: {sorted(libs)}"


if __name__ == "__main__":
    pv.main([test_worker_maps_only_what_it_uses])
