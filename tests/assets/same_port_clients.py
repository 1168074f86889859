"""Lab client: opens connections that all want the same translated tuple, concurrently.

usage: same_port_clients.py SRC_PORT DST_IP DST_PORT[,DST_PORT...] SRC_IP...
Every SRC_IP connects from SRC_PORT to every DST_PORT; all connections are open at once
before any request is sent. Prints each server reply ("PEER_IP PEER_PORT"), one per line.
"""
import socket
import sys


def main():
    src_port, dst_ip = int(sys.argv[1]), sys.argv[2]
    dst_ports = [int(p) for p in sys.argv[3].split(",")]
    socks = []
    for src_ip in sys.argv[4:]:
        for dst_port in dst_ports:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.settimeout(10)
            s.bind((src_ip, src_port))
            s.connect((dst_ip, dst_port))
            socks.append(s)
    for s in socks:
        s.sendall(b"who am i\n")
    for s in socks:
        print(s.makefile().readline().strip(), flush=True)
        s.close()


main()
