"""nginx as a bound: the same engines behind the most common C reverse proxy, streaming unbuffered.

Not a router (no queue, no slots, no retries before the first byte): what relaying the same
chunks costs a proxy written in C with one event loop per CPU. Runs where `nginx` is on PATH
(Debian: `apt-get install nginx-light`); the arm is skipped with the reason otherwise.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from bench.gateway.arms import NGINX, Arm, Ports
from inferfleet.gateway.upstream import address_of

HEALTH = "/nginx-health"


def find_nginx() -> Path | None:
    found = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if Path(p).is_file()), None
    )
    return Path(found) if found else None


def build_nginx_config(engine_urls: list[str], port: int, prefix: Path) -> str:
    """One worker per CPU (as vllm-router runs a thread per CPU), kept-alive upstream connections,
    round robin, no buffering either way: every chunk goes on as it arrives."""
    servers = "\n".join(f"    server {address_of(u)};" for u in engine_urls)
    temp = " ".join(f"{kind}_temp_path {prefix}/{kind};" for kind in ("proxy", "fastcgi", "uwsgi", "scgi"))
    return f"""worker_processes auto;
worker_rlimit_nofile 16384;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 8192; }}
http {{
  access_log off;
  client_body_temp_path {prefix}/body; {temp}
  upstream engines {{
{servers}
    keepalive 2048;
  }}
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location = {HEALTH} {{ return 200 "ok"; }}
    location / {{
      proxy_pass http://engines;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
      proxy_request_buffering off;
      proxy_read_timeout 120s;
    }}
  }}
}}
"""


def nginx_arm(executable: Path, engine_urls: list[str], ports: Ports, workdir: Path) -> Arm:
    prefix = workdir / "nginx"
    prefix.mkdir(parents=True, exist_ok=True)
    config = prefix / "nginx.conf"
    config.write_text(build_nginx_config(engine_urls, ports.api, prefix))
    command = [str(executable), "-p", str(prefix), "-e", str(prefix / "error.log"), "-c", str(config),
               "-g", "daemon off;"]  # fmt: skip
    return Arm(
        NGINX,
        targets=[f"http://127.0.0.1:{ports.api}"],
        command=command,
        ready_url=f"http://127.0.0.1:{ports.api}{HEALTH}",
    )
