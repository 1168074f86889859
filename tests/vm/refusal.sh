# The refusal steps of the VM lab, where pod mode cannot run (sourced by lab.sh, whose
# helpers they use).

# What a kernel that cannot run pod mode says: `features` names the missing feature.
step_features_refused() {
    "$BIN" features || return 1
    "$BIN" features | grep -q '^pod mode: cannot run here: this kernel lacks ' ||
        fail "features does not say why pod mode cannot run"
}

# The network state of namespace $1 and the bpffs, for comparison before and after.
state() {
    for what in "-d link" "addr" "route"; do
        echo "== ip $what"
        # shellcheck disable=SC2086 # $what is two words on purpose
        $IP -n "$1" $what
    done
    echo "== tc qdisc"
    in_ns "$1" "$TC" qdisc show
    for dev in $($IP -n "$1" -o link show | awk -F': ' '{ print $2 }' | cut -d@ -f1); do
        for dir in ingress egress; do
            echo "== tc filter $dev $dir"
            in_ns "$1" "$TC" filter show dev "$dev" "$dir" 2>&1
        done
    done
    echo "== bpftool net"
    in_ns "$1" "$BPFTOOL" net show 2>&1
    echo "== bpftool prog"
    "$BPFTOOL" prog show 2>&1
    echo "== bpffs"
    find /sys/fs/bpf 2>&1
}

# The state of namespace $1 once it has settled (two readings 0.25 s apart agree; a
# veth's carrier comes up a moment after the lab set it up), into file $2.
settled_state() {
    state "$1" >"$2"
    for _ in $(seq 1 20); do
        sleep 0.25
        state "$1" >/tmp/state.again
        cmp -s "$2" /tmp/state.again && return 0
        mv /tmp/state.again "$2"
    done
    fail "the state of $1 did not settle in 5 s"
}

# COMMAND... (egress-router) in namespace NS refuses: exit 1, ONE line naming the missing
# feature and the kernel that has it (the one `features` names for PLANE), and the
# namespace's links, addresses, routes, qdiscs, filters, attached programs and the bpffs
# exactly as before.
refuses() {
    ns=$1 plane=$2
    shift 2
    settled_state "$ns" /tmp/before.state || return 1
    in_ns "$ns" "$@" >/tmp/refusal.out 2>&1
    rc=$?
    settled_state "$ns" /tmp/after.state || return 1
    echo "exit $rc; it said:"
    cat /tmp/refusal.out
    expected=$("$BIN" features | sed -n "s/^$plane: cannot run here: //p")
    lines=$(grep -c . /tmp/refusal.out)
    [ "$rc" -eq 1 ] || fail "exit $rc, not 1" || return 1
    [ "$lines" -eq 1 ] || fail "$lines lines, not one" || return 1
    grep -qF "$expected" /tmp/refusal.out || fail "the line is not features' reason: $expected" ||
        return 1
    grep -q 'Linux [0-9.]* or later' /tmp/refusal.out || fail "no minimum kernel named" || return 1
    if ! diff /tmp/before.state /tmp/after.state; then
        fail "the refusal changed the state of $ns or the bpffs (diff above)"
        return 1
    fi
    echo "state of $ns and the bpffs: as before ($(wc -l </tmp/before.state) lines compared):"
    sed 's/^/  | /' /tmp/before.state
}

# As step_init runs it.
step_init_refused() {
    refuses router "pod mode" env EGRESS_SOURCE="$EGRESS_SOURCE" EGRESS_GATEWAY="$GATEWAY_IP" \
        EGRESS_DESTINATION="$DESTINATION" EGRESS_ROUTER_MODE=init \
        "$BIN" --bpffs "$BPFFS" --instance "$INSTANCE"
}

# As step_node starts the node agent, on the lab's node.
step_node_refused() {
    mkdir -p "$SPOOL"
    refuses node "node mode" "$BIN" node --uplink uplink --spool "$SPOOL" --bpffs "$NODE_BPFFS"
}
