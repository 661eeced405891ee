# Sourced by the benchmark scripts: starts a private tgtd with a null LUN and, where this
# tree has it, our iscsi-gateway with a null LUN, on free loopback ports, and stops them
# (and removes $work) on exit. Sets `targets` to lines "name portal iqn lun", `work` to a
# scratch directory, and `pids`; the caller may append to `pids`. Needs root, tgtd, tgtadm.
# ONLY_TARGET=tgt-null|gateway-null keeps one of them; WITH_GATEWAY=0 never starts ours.

work=$(mktemp -d /tmp/iscsi-bench.XXXXXX)
pids=()
cleanup() {
    # tgtd ignores SIGTERM: the orderly way out is deleting its targets, then the system.
    if [ -n "${TGT_IPC_SOCKET:-}" ]; then
        tgtadm -C 0 --lld iscsi --op delete --mode target --tid 1 --force >/dev/null 2>&1 || true
        tgtadm -C 0 --op delete --mode system >/dev/null 2>&1 || true
    fi
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    sleep 0.5
    for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# --- tgtd with a null LUN -------------------------------------------------------------
tgt_port=$(free_port)
tgt_iqn="iqn.2026-11.io.iscsi-uring:bench-null"
export TGT_IPC_SOCKET="$work/tgtd-ipc"
tgtd -f -C 0 -t 2 --iscsi "portal=127.0.0.1:$tgt_port" >"$work/tgtd.log" 2>&1 &
pids+=($!)
tgtadm_() { tgtadm -C 0 --lld iscsi "$@"; }
for _ in $(seq 50); do tgtadm_ --op show --mode target >/dev/null 2>&1 && break; sleep 0.1; done
tgtadm_ --op new --mode target --tid 1 -T "$tgt_iqn"
tgtadm_ --op new --mode logicalunit --tid 1 --lun 1 --bstype null --backing-store /dev/null
tgtadm_ --op bind --mode target --tid 1 -I ALL

# name portal iqn lun
targets=("tgt-null 127.0.0.1:$tgt_port $tgt_iqn 1")

# --- our gateway, where this tree has one -------------------------------------------------
if [ "${WITH_GATEWAY:-1}" = 0 ]; then
    :
elif [ -f gateway/src/bin/iscsi-gateway.rs ]; then
    echo "building iscsi-gateway (release)..." >&2
    if cargo build --quiet --release -p gateway --bin iscsi-gateway; then
        gw_port=$(free_port)
        gw_iqn="iqn.2026-11.io.iscsi-uring:bench-gateway"
        "$root/target/release/iscsi-gateway" --portal "127.0.0.1:$gw_port" --iqn "$gw_iqn" \
            --lun null:100G >"$work/gateway.log" 2>&1 &
        pids+=($!)
        for _ in $(seq 50); do
            (exec 3<>"/dev/tcp/127.0.0.1/$gw_port") 2>/dev/null && break
            sleep 0.1
        done
        targets+=("gateway-null 127.0.0.1:$gw_port $gw_iqn 0")
    else
        echo "bench: iscsi-gateway did not build; skipping it" >&2
    fi
else
    echo "bench: no gateway in this tree; tgt only" >&2
fi

if [ -n "${ONLY_TARGET:-}" ]; then
    kept=()
    for t in "${targets[@]}"; do
        [ "${t%% *}" = "$ONLY_TARGET" ] && kept+=("$t")
    done
    targets=("${kept[@]}")
fi
