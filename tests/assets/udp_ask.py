"""Lab client: sends one UDP datagram and prints the reply (retries 3 times, 1 s each).

usage: udp_ask.py DST_IP DST_PORT (IPv4 or IPv6)
"""
import socket
import sys

family = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
sock = socket.socket(family, socket.SOCK_DGRAM)
sock.settimeout(1)
for _ in range(3):
    sock.sendto(b"who am i\n", (sys.argv[1], int(sys.argv[2])))
    try:
        print(sock.recv(2048).decode().strip())
        sys.exit(0)
    except socket.timeout:
        pass
sys.exit("no reply")
