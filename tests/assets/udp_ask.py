"""Lab client: sends one UDP datagram and prints the reply (retries 3 times, 1 s each).

usage: udp_ask.py DST_IP DST_PORT
"""
import socket
import sys

sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.settimeout(1)
for _ in range(3):
    sock.sendto(b"who am i\n", (sys.argv[1], int(sys.argv[2])))
    try:
        print(sock.recv(2048).decode().strip())
        sys.exit(0)
    except socket.timeout:
        pass
sys.exit("no reply")
