# The lab of `cargo xtask vm-test`, run by /init in the VM: the topology of tests/src/lab.rs
# (client, router pod, node, gateway, server; documentation ranges only), then one step
# after another. Which steps, `egress-router features` decides (at the bottom): on a kernel
# where pod mode runs, the whole lab (node mode's steps in node.sh); on one where it cannot,
# what a user sees there (refusal.sh: the refusal, and nothing changed). A step is a
# function; `step NAME NEEDS` runs `step_NAME` once every step named in NEEDS passed (else
# it is SKIPPED), prints its output indented, and reports `vm-step: NAME: ok` or `FAILED`.
# A step fails with `fail MESSAGE`. To add one: write `step_<name>` and call
# `step <name> "<needs>"` at the bottom.

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

# Node mode (node.sh) and the refusal (refusal.sh).
. /lab/node.sh
. /lab/refusal.sh

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
    if managed_missing; then
        step node_refresh "node"
    fi
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
