# The lab of `cargo xtask vm-test`, run by /init in the VM: the topology of tests/src/lab.rs
# (client, router pod, node, gateway, server; documentation ranges only), then one step
# after another. Which steps, `egress-router features` decides (at the bottom): on a kernel
# where pod mode runs, the whole lab; on one where it cannot, what a user sees there (the
# refusal, and nothing changed). A step is a function; `step NAME NEEDS` runs `step_NAME` once every step
# named in NEEDS passed (else it is SKIPPED), prints its output indented, and reports
# `vm-step: NAME: ok` or `FAILED`. A step fails with `fail MESSAGE`. To add one: write
# `step_<name>` and call `step <name> "<needs>"` at the bottom.

IP=/opt/bin/ip
TC=/opt/bin/tc
BPFTOOL=/opt/bin/bpftool
BIN=/bin/egress-router
VMLAB=/bin/vmlab
BPFFS=/sys/fs/bpf/egress-router
INSTANCE=vm

CLIENT_IP=192.0.2.2
POD_IP=192.0.2.1
GATEWAY_IP=198.51.100.1
EGRESS_SOURCE=198.51.100.100
SERVER_IP=203.0.113.10
DESTINATION="80 tcp $SERVER_IP
5300 udp $SERVER_IP 5353"

PASSED=" "
FAILED=0

# Runs a command in a lab namespace (only the network namespace changes, as the tests do).
in_ns() {
    ns=$1
    shift
    nsenter --net=/run/netns/"$ns" "$@"
}

fail() {
    echo "$*" >&2
    return 1
}

uptime_s() {
    cut -d' ' -f1 /proc/uptime
}

step() {
    name=$1
    for need in $2; do
        case "$PASSED" in
        *" $need "*) ;;
        *)
            echo "vm-step: $name: SKIPPED (needs $need)"
            return 0
            ;;
        esac
    done
    echo "vm-step: $name: start"
    t0=$(uptime_s)
    "step_$name" >/tmp/step.out 2>&1
    rc=$?
    sed 's/^/    /' /tmp/step.out
    t1=$(uptime_s)
    secs=$(awk "BEGIN { printf \"%.1f\", $t1 - $t0 }")
    if [ $rc -eq 0 ]; then
        PASSED="$PASSED$name "
        echo "vm-step: $name: ok (${secs} s)"
    else
        FAILED=$((FAILED + 1))
        echo "vm-step: $name: FAILED (${secs} s)"
    fi
}

# The router's environment, as the pod's containers have it.
router_env() {
    echo "EGRESS_SOURCE=$EGRESS_SOURCE"
    echo "EGRESS_GATEWAY=$GATEWAY_IP"
}

# egress-router in the router namespace with the lab's configuration; MODE as given.
router() {
    mode=$1
    shift
    in_ns router env EGRESS_SOURCE="$EGRESS_SOURCE" EGRESS_GATEWAY="$GATEWAY_IP" \
        EGRESS_DESTINATION="$DESTINATION" EGRESS_ROUTER_MODE="$mode" \
        "$BIN" --bpffs "$BPFFS" --instance "$INSTANCE" "$@"
}

# What the server saw of one TCP request and one UDP datagram through the router pod.
check_tcp() {
    seen=$(echo "$1" | in_ns client timeout 10 "$VMLAB" ask-tcp "$POD_IP:80") ||
        fail "TCP to $POD_IP:80: no answer"
    echo "TCP: the server saw: $seen"
    case "$seen" in
    "$EGRESS_SOURCE "*) ;;
    *) fail "TCP: the server saw ${seen:-nothing}, not $EGRESS_SOURCE" ;;
    esac
}

check_udp() {
    seen=$(in_ns client timeout 10 "$VMLAB" ask-udp "$POD_IP:5300" "$1") ||
        fail "UDP to $POD_IP:5300: no answer"
    echo "UDP: the server saw: $seen"
    case "$seen" in
    "$EGRESS_SOURCE "*) ;;
    *) fail "UDP: the server saw ${seen:-nothing}, not $EGRESS_SOURCE" ;;
    esac
}

# What is attached where, for the log (bpftool 7.1 does not list TCX links; tc shows the
# classic filters).
show_hooks() {
    echo "[router] bpftool net:"
    in_ns router "$BPFTOOL" net show 2>&1 | sed 's/^/  /'
    for dev in eth0 macvlan0; do
        for dir in ingress egress; do
            filters=$(in_ns router "$TC" filter show dev "$dev" "$dir" 2>&1)
            [ -z "$filters" ] || echo "[router] tc filter $dev $dir: $filters"
        done
    done
}

# Every program of the product through this kernel's verifier, one at a time: each
# failure with the kernel's message, the source line and the end of the walk.
step_verify() {
    "$VMLAB" verify --stats --trace 12
}

step_lab() {
    for ns in client router node gateway server; do
        $IP netns add "$ns" || return 1
        $IP -n "$ns" link set lo up || return 1
        in_ns "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
    done
    $IP -n router link add eth0 type veth peer name eth0 netns client &&
        $IP -n node link add uplink type veth peer name lan0 netns gateway &&
        $IP -n gateway link add wan0 type veth peer name eth0 netns server &&
        $IP -n node link add macvlan0 link uplink type macvlan mode private &&
        $IP -n node link set macvlan0 netns router &&
        $IP -n node link set uplink up &&
        $IP -n client addr add "$CLIENT_IP/24" dev eth0 && $IP -n client link set eth0 up &&
        $IP -n router addr add "$POD_IP/24" dev eth0 && $IP -n router link set eth0 up &&
        $IP -n gateway addr add "$GATEWAY_IP/24" dev lan0 && $IP -n gateway link set lan0 up &&
        $IP -n gateway addr add 203.0.113.1/24 dev wan0 && $IP -n gateway link set wan0 up &&
        $IP -n server addr add "$SERVER_IP/24" dev eth0 && $IP -n server link set eth0 up &&
        $IP -n server route add default via 203.0.113.1 &&
        in_ns gateway sysctl -qw net.ipv4.ip_forward=1 || return 1
    in_ns server "$VMLAB" serve-tcp "$SERVER_IP:80" >/tmp/serve-tcp.log 2>&1 &
    in_ns server "$VMLAB" serve-udp "$SERVER_IP:5353" >/tmp/serve-udp.log 2>&1 &
    sleep 0.3
    echo "client $CLIENT_IP -> router pod $POD_IP -> gateway $GATEWAY_IP -> server $SERVER_IP"
}

step_init() {
    router init
    rc=$?
    show_hooks
    return $rc
}

step_traffic() {
    check_tcp first && check_udp first
}

# The agent (legacy mode) in the background, started as a plain command (not through a
# function) so that $! is the agent's own PID, and without fd 3 (the restart step's open
# connection: an agent holding it would keep that client from ending); waits for /healthz
# to answer 200.
AGENT_PID=
start_agent() {
    nsenter --net=/run/netns/router env EGRESS_SOURCE="$EGRESS_SOURCE" \
        EGRESS_GATEWAY="$GATEWAY_IP" EGRESS_DESTINATION="$DESTINATION" \
        EGRESS_ROUTER_MODE=legacy "$BIN" --bpffs "$BPFFS" --instance "$INSTANCE" \
        >>/tmp/agent.log 2>&1 3>&- &
    AGENT_PID=$!
    health=
    for _ in $(seq 1 40); do
        health=$(in_ns client "$VMLAB" http-get "$POD_IP:9469" /healthz 2>&1) &&
            { echo "agent $AGENT_PID healthy"; return 0; }
        if ! kill -0 "$AGENT_PID" 2>/dev/null; then
            sed 's/^/agent| /' /tmp/agent.log
            fail "the agent exited before it was healthy"
            return 1
        fi
        sleep 0.5
    done
    sed 's/^/agent| /' /tmp/agent.log
    fail "the agent was not healthy after 20 s; /healthz: ${health:-no answer}"
}

step_agent() {
    start_agent && check_tcp agent && check_udp agent
}

# An open connection keeps its translation across an agent's SIGKILL and restart.
step_restart() {
    rm -f /tmp/hold.in /tmp/hold.out
    mkfifo /tmp/hold.in
    in_ns client timeout 60 "$VMLAB" ask-tcp "$POD_IP:80" </tmp/hold.in >/tmp/hold.out 2>&1 &
    holder=$!
    exec 3>/tmp/hold.in
    echo before >&3
    sleep 0.5
    before=$(grep ' before$' /tmp/hold.out)
    echo "open connection, before: $before"
    kill -9 "$AGENT_PID"
    wait "$AGENT_PID" 2>/dev/null
    echo "agent $AGENT_PID killed (SIGKILL)"
    start_agent || { exec 3>&-; return 1; }
    echo after >&3
    sleep 0.5
    exec 3>&-
    wait "$holder"
    after=$(grep ' after$' /tmp/hold.out)
    echo "open connection, after: $after"
    [ -n "$before" ] || fail "no answer before the restart: $(cat /tmp/hold.out)" || return 1
    [ "${before% before}" = "${after% after}" ] ||
        fail "the connection did not keep its translation: $(cat /tmp/hold.out)"
}

step_teardown() {
    if [ -n "$AGENT_PID" ]; then
        kill "$AGENT_PID" 2>/dev/null
        wait "$AGENT_PID" 2>/dev/null
    fi
    in_ns router "$BIN" --bpffs "$BPFFS" --instance "$INSTANCE" teardown || return 1
    left=$("$BPFTOOL" prog show 2>/dev/null)
    pins=$(ls -A "$BPFFS" 2>/dev/null)
    show_hooks
    [ -z "$left" ] || fail "programs left after teardown: $left" || return 1
    [ -z "$pins" ] || fail "pins left after teardown under $BPFFS: $pins" || return 1
    for dev in eth0 macvlan0; do
        if in_ns router "$TC" qdisc show dev "$dev" | grep -q clsact; then
            fail "a clsact qdisc left on $dev"
            return 1
        fi
    done
}

# What the kernel offers, as `egress-router features` probes it: both modes must run.
step_features() {
    "$BIN" features || return 1
    "$BIN" features | grep -q '^pod mode: runs here' || fail "pod mode cannot run here" || return 1
    "$BIN" features | grep -q '^node mode: runs here' || fail "node mode cannot run here"
}

# Node mode serving one instance, on namespaces of its own with the topology of
# tests/src/nodelab.rs: pods wired as routed CNIs wire them (/32 routes, proxy ARP), the
# node agent on the uplink, a router pod registered through the spool, a client pod's
# connection to the router pod's IP seen by the server from the instance's EGRESS_SOURCE.
# The gateway's neighbour entry for EGRESS_SOURCE is set by hand: a veth delivers what the
# ARP responder transmits only to a peer in NAPI, which the lab's gateway is not (the
# suite's node lab gives it an XDP program for that).
NODE_SOURCE=198.51.100.101
NODE_UPLINK_IP=198.51.100.2
NPOD_IP=192.0.2.11
NCLIENT_IP=192.0.2.101
NODE_BPFFS=/sys/fs/bpf/egress-router-node
SPOOL=/tmp/spool
NODE_PID=

# HOST (in the node) wired to eth0 of pod namespace POD with address ADDR. (Not `ns`:
# in_ns sets that one, and shell variables are global.)
wire_pod() {
    host=$1 pod=$2 addr=$3
    $IP -n nnode link add "$host" type veth peer name eth0 netns "$pod" &&
        in_ns nnode sysctl -qw "net.ipv4.conf.$host.proxy_arp=1" "net.ipv4.neigh.$host.proxy_delay=0" &&
        $IP -n nnode link set "$host" up &&
        $IP -n nnode route add "$addr/32" dev "$host" &&
        $IP -n "$pod" addr add "$addr/32" dev eth0 && $IP -n "$pod" link set eth0 up &&
        $IP -n "$pod" route add default dev eth0
}

wait_log() {
    for _ in $(seq 1 60); do
        grep -q "$2" "$1" && return 0
        sleep 0.25
    done
    sed 's/^/log| /' "$1"
    fail "no '$2' in $1 after 15 s"
}

step_node() {
    for ns in nclient npod nnode ngw nserver; do
        $IP netns add "$ns" || return 1
        $IP -n "$ns" link set lo up || return 1
        in_ns "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
    done
    wire_pod cli0 nclient "$NCLIENT_IP" && wire_pod pod0 npod "$NPOD_IP" &&
        $IP -n nnode link add uplink type veth peer name lan0 netns ngw &&
        $IP -n ngw link add wan0 type veth peer name eth0 netns nserver &&
        $IP -n nnode addr add "$NODE_UPLINK_IP/24" dev uplink && $IP -n nnode link set uplink up &&
        $IP -n nnode route add default via "$GATEWAY_IP" &&
        in_ns nnode sysctl -qw net.ipv4.ip_forward=1 &&
        $IP -n ngw addr add "$GATEWAY_IP/24" dev lan0 && $IP -n ngw link set lan0 up &&
        $IP -n ngw addr add 203.0.113.1/24 dev wan0 && $IP -n ngw link set wan0 up &&
        in_ns ngw sysctl -qw net.ipv4.ip_forward=1 &&
        $IP -n nserver addr add "$SERVER_IP/24" dev eth0 && $IP -n nserver link set eth0 up &&
        $IP -n nserver route add default via 203.0.113.1 || return 1
    in_ns nserver "$VMLAB" serve-tcp "$SERVER_IP:80" >/tmp/nserve-tcp.log 2>&1 &
    mkdir -p "$SPOOL/$NPOD_IP"
    nsenter --net=/run/netns/nnode "$BIN" node --uplink uplink --spool "$SPOOL" \
        --bpffs "$NODE_BPFFS" --rescan-ms 50 >/tmp/node.log 2>&1 &
    NODE_PID=$!
    wait_log /tmp/node.log "node agent serving" || return 1
    in_ns npod env EGRESS_SOURCE="$NODE_SOURCE/24" EGRESS_GATEWAY="$GATEWAY_IP" \
        EGRESS_DESTINATION="80 tcp $SERVER_IP" "$BIN" node-register --spool "$SPOOL/$NPOD_IP" ||
        return 1
    wait_log /tmp/node.log "serving a new instance" || return 1
    mac=$($IP -n nnode link show uplink | awk '/link\/ether/ { print $2 }')
    $IP -n ngw neigh replace "$NODE_SOURCE" lladdr "$mac" dev lan0 nud permanent || return 1
    for dev in pod0 uplink; do
        for dir in ingress egress; do
            filters=$(in_ns nnode "$TC" filter show dev "$dev" "$dir" 2>&1)
            [ -z "$filters" ] || echo "[node] tc filter $dev $dir: $filters"
        done
    done
    # What the agent uses in place of missing features (on 5.15: managed neighbours; the
    # gateway's entry is then a plain one the agent keeps resolved).
    sed -n 's/.*kernel feature missing.* feature="\([^"]*\)".*/node agent: \1 missing: its fallback in use/p' /tmp/node.log
    echo "[node] neighbours on uplink: $($IP -n nnode neigh show dev uplink | tr '\n' ';')"
    seen=$(echo node | in_ns nclient timeout 10 "$VMLAB" ask-tcp "$NPOD_IP:80") ||
        fail "TCP to $NPOD_IP:80: no answer" || return 1
    echo "node mode: the server saw: $seen"
    case "$seen" in
    "$NODE_SOURCE "*) ;;
    *) fail "node mode: the server saw ${seen:-nothing}, not $NODE_SOURCE" ;;
    esac
}

step_node_teardown() {
    if [ -n "$NODE_PID" ]; then
        kill "$NODE_PID" 2>/dev/null
        wait "$NODE_PID" 2>/dev/null
    fi
    in_ns nnode "$BIN" node-teardown --uplink uplink --bpffs "$NODE_BPFFS" || return 1
    left=$("$BPFTOOL" prog show 2>/dev/null)
    [ -z "$left" ] || fail "programs left after node-teardown: $left" || return 1
    for dev in pod0 uplink; do
        if in_ns nnode "$TC" qdisc show dev "$dev" | grep -q clsact; then
            fail "a clsact qdisc left on $dev"
            return 1
        fi
    done
}

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

# COMMAND... (egress-router) in namespace NS refuses: exit 1, ONE line naming the missing
# feature and the kernel that has it (the one `features` names for PLANE), and the
# namespace's links, addresses, routes, qdiscs, filters, attached programs and the bpffs
# exactly as before.
refuses() {
    ns=$1 plane=$2
    shift 2
    state "$ns" >/tmp/before.state
    in_ns "$ns" "$@" >/tmp/refusal.out 2>&1
    rc=$?
    state "$ns" >/tmp/after.state
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

echo "vm-lab: egress-router $("$BIN" --version 2>&1)"
if "$BIN" features | grep -q '^pod mode: runs here'; then
    echo "vm-lab: pod mode runs here: the whole lab"
    step verify ""
    step features ""
    step lab ""
    step init "lab"
    step traffic "init"
    step agent "init"
    step restart "agent"
    step teardown "lab"
    step node "features"
    step node_teardown "node"
else
    echo "vm-lab: pod mode cannot run here: the refusal"
    step features_refused ""
    step lab ""
    step init_refused "lab features_refused"
    step node_refused "lab features_refused"
fi
echo "vm-lab: $FAILED step(s) failed"
[ "$FAILED" -eq 0 ]
