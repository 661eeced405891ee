"""The benchmarks' two ways to talk to a gateway's control socket: `iscsi-ctl gateway`
(as a user would) and one JSON-RPC call straight on the socket (no process started per
call, and the real-time clock read around it)."""
import json
import socket
import subprocess
import time


def ctl(binary, control_socket, *args):
    """`iscsi-ctl gateway --json ARGS` on `control_socket`; its parsed answer."""
    out = subprocess.run([binary, "gateway", "--socket", control_socket, "--json", *args],
                         capture_output=True, timeout=120)
    if out.returncode != 0:
        raise RuntimeError(f"iscsi-ctl {args}: {out.stderr.decode()}")
    return json.loads(out.stdout)


def rpc(control_socket, method, params, settle=0.0):
    """One JSON-RPC call on `control_socket`: (result, sent, answered), the real-time
    clock read just before the request went and just after the answer came. `settle`
    seconds pass between the connect and the request (the gateway's client thread is up
    before the clock starts)."""
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(control_socket)
        time.sleep(settle)
        line = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
        sent = time.time()
        s.sendall(line.encode() + b"\n")
        answer = b""
        while not answer.endswith(b"\n"):
            chunk = s.recv(1 << 16)
            if not chunk:
                break
            answer += chunk
        answered = time.time()
    reply = json.loads(answer)
    if "error" in reply:
        raise RuntimeError(f"{method}: {reply['error']}")
    return reply["result"], sent, answered
