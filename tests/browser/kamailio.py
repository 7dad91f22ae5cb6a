"""A real SIP server for the softphone tests: Debian's Kamailio on loopback as a SIP-over-WebSocket
registrar (in memory) and proxy, with simple digest auth (each user's password is "pw-<user>")."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

MODULES = "/usr/lib/x86_64-linux-gnu/kamailio/modules/"

CONFIG = """#!KAMAILIO
debug=2
log_stderror=yes
children=2
tcp_children=2
auto_aliases=no
listen=tcp:127.0.0.1:{port}
alias="127.0.0.1:{port}"
tcp_accept_no_cl=yes
tcp_connection_lifetime=3605
mpath="{modules}"
loadmodule "kex.so"
loadmodule "corex.so"
loadmodule "tm.so"
loadmodule "tmx.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "xlog.so"
loadmodule "sanity.so"
loadmodule "ctl.so"
loadmodule "auth.so"
loadmodule "nathelper.so"
loadmodule "xhttp.so"
loadmodule "websocket.so"
modparam("ctl", "binrpc", "unix:{ctl}")
# Set to 1 over RPC (``Kamailio.refuse_registrations``): REGISTERs get 503, as a PBX that is
# restarting or overloaded answers.
modparam("pv", "shvset", "refuse=i:0")
modparam("usrloc", "db_mode", 0)
# A contact whose WebSocket closed is gone (a closed tab leaves no stale registration).
modparam("usrloc", "handle_lost_tcp", 1)
modparam("registrar", "received_avp", "$avp(RECEIVED)")
modparam("nathelper", "received_avp", "$avp(RECEIVED)")

request_route {{
  if (!mf_process_maxfwd_header("10")) {{ sl_send_reply("483", "Too Many Hops"); exit; }}
  if (nat_uac_test("64")) {{
    force_rport();
    if (is_method("REGISTER")) {{ fix_nated_register(); }} else {{ add_contact_alias(); }}
  }}
  if (has_totag()) {{
    if (loose_route()) {{ handle_ruri_alias(); t_relay(); exit; }}
    if (is_method("ACK")) {{ if (t_check_trans()) {{ t_relay(); }} exit; }}
    sl_send_reply("404", "Not here"); exit;
  }}
  if (is_method("CANCEL")) {{ if (t_check_trans()) {{ t_relay(); }} exit; }}
  t_check_trans();
  if (is_method("REGISTER")) {{
    xlog("L_ERR", "REGISTER from $fU\n");
    if ($shv(refuse) == 1) {{ sl_send_reply("503", "Service Unavailable"); exit; }}
    $var(pw) = "pw-" + $fU;
    if (!pv_www_authenticate("$fd", "$var(pw)", "0")) {{ www_challenge("$fd", "0"); exit; }}
    if (!save("location")) {{ sl_reply_error(); }}
    exit;
  }}
  if (is_method("INVITE|SUBSCRIBE|REFER")) {{ record_route(); }}
  if (!lookup("location")) {{ sl_send_reply("480", "Temporarily Unavailable"); exit; }}
  t_relay();
}}

onreply_route {{
  if (nat_uac_test("64")) {{ add_contact_alias(); }}
}}

event_route[xhttp:request] {{
  if ($hdr(Upgrade) =~ "websocket" && $hdr(Connection) =~ "Upgrade" && $rm =~ "GET") {{
    if (ws_handle_handshake()) {{ exit; }}
  }}
  xhttp_reply("404", "Not Found", "", "");
}}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Kamailio:
    directory: Path
    port: int = field(default_factory=_free_port)
    process: subprocess.Popen[bytes] | None = None
    log: BinaryIO | None = None

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def ctl(self) -> Path:
        return self.directory / "kamailio.ctl"

    def start(self) -> None:
        cfg = self.directory / "kamailio.cfg"
        self.ctl.unlink(missing_ok=True)  # a restart waits for the new one
        cfg.write_text(CONFIG.format(port=self.port, modules=MODULES, ctl=self.ctl))
        self.log = open(self.directory / "kamailio.log", "ab")  # noqa: SIM115 - lives with the process
        self.process = subprocess.Popen(
            [
                "kamailio",
                "-DD",
                "-E",
                "-f",
                str(cfg),
                "-Y",
                str(self.directory),
                "-P",
                str(self.directory / "pid"),
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("kamailio did not start: " + (self.directory / "kamailio.log").read_text())
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    pass
                if self.ctl.exists():
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError("kamailio did not listen in time")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None
        if self.log is not None:
            self.log.close()
            self.log = None

    def contacts(self, user: str) -> list[str]:
        """The contacts registered for ``user`` in Kamailio's location table (kamcmd ul.lookup)."""
        done = subprocess.run(
            ["kamcmd", "-s", f"unix:{self.ctl}", "ul.lookup", "location", user],
            capture_output=True,
            text=True,
            timeout=10,
        )
        if done.returncode != 0 or "AOR not found" in done.stdout + done.stderr:
            return []
        return re.findall(r"Address:\s*(\S+)", done.stdout)

    def refuse_registrations(self, refuse: bool) -> None:
        """From now on, answer every REGISTER 503 (``True``) or as usual (``False``)."""
        subprocess.run(
            ["kamcmd", "-s", f"unix:{self.ctl}", "pv.shvSet", "refuse", "int", "1" if refuse else "0"],
            capture_output=True,
            timeout=10,
            check=True,
        )

    def registers_from(self, user: str) -> int:
        """How many REGISTER requests ``user`` has sent since Kamailio started (its log)."""
        path = self.directory / "kamailio.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return len(re.findall(rf"REGISTER from {re.escape(user)}$", text, re.MULTILINE))


def available() -> bool:
    return shutil.which("kamailio") is not None and Path(MODULES, "websocket.so").exists()
