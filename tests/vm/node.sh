# Node mode's steps of the VM lab (sourced by lab.sh, whose helpers they use).

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
    # Resolved before any traffic, by the agent alone: managed where the kernel has managed
    # neighbours, else a plain entry (the agent's NTF_USE).
    gateway_resolved || return 1
    entry=$($IP -n nnode neigh show dev uplink "$GATEWAY_IP")
    if managed_missing; then
        case "$entry" in
        *managed*) fail "the gateway's entry is managed, but features says it cannot be: $entry" || return 1 ;;
        esac
    else
        case "$entry" in
        *managed*) ;;
        *) fail "the gateway's entry is not managed: $entry" || return 1 ;;
        esac
    fi
    seen=$(echo node | in_ns nclient timeout 10 "$VMLAB" ask-tcp "$NPOD_IP:80") ||
        fail "TCP to $NPOD_IP:80: no answer" || return 1
    echo "node mode: the server saw: $seen"
    case "$seen" in
    "$NODE_SOURCE "*) ;;
    *) fail "node mode: the server saw ${seen:-nothing}, not $NODE_SOURCE" ;;
    esac
}

# Whether features says the kernel has no managed neighbours (before 5.16).
managed_missing() {
    "$BIN" features | grep -q '^managed_neighbours  *no '
}

# Waits up to $1 s (default 2) for the gateway's entry on the node's uplink to have an
# address.
gateway_resolved() {
    for _ in $(seq 1 $((${1:-2} * 4))); do
        $IP -n nnode neigh show dev uplink "$GATEWAY_IP" | grep -q lladdr && return 0
        sleep 0.25
    done
    fail "no resolved entry for the gateway $GATEWAY_IP on the node's uplink: $($IP -n nnode neigh show dev uplink)"
}

# Where the kernel has no managed neighbours: the node agent itself resolves each gateway
# again (NTF_USE, every 10 s, route::REFRESH). The gateway's entry is deleted with no
# traffic flowing; only the agent can bring it back, within one period; then a new
# connection is translated.
step_node_refresh() {
    $IP -n nnode neigh del "$GATEWAY_IP" dev uplink || return 1
    t0=$(uptime_s)
    echo "gateway's entry deleted: $($IP -n nnode neigh show dev uplink "$GATEWAY_IP" | tr '\n' ';')"
    gateway_resolved 15 || return 1
    t1=$(uptime_s)
    echo "resolved again by the agent after $(awk "BEGIN { printf \"%.1f\", $t1 - $t0 }") s: $($IP -n nnode neigh show dev uplink "$GATEWAY_IP")"
    seen=$(echo refreshed | in_ns nclient timeout 10 "$VMLAB" ask-tcp "$NPOD_IP:80") ||
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

