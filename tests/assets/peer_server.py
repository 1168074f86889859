"""Lab server: answers every TCP connection or UDP datagram with the peer address it saw.

usage: peer_server.py tcp|udp ADDR PORT
TCP: reads one line, replies "PEER_IP PEER_PORT\n", closes. UDP: replies to each datagram
with "PEER_IP PEER_PORT\n". Each peer is also printed to stdout, one per line.
"""
import socket
import socketserver
import sys


class Tcp(socketserver.StreamRequestHandler):
    def handle(self):
        self.rfile.readline()
        ip, port = self.client_address
        self.wfile.write(f"{ip} {port}\n".encode())
        print(f"{ip} {port}", flush=True)


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True
    request_queue_size = 128


def main():
    kind, addr, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if kind == "tcp":
        Server((addr, port), Tcp).serve_forever()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((addr, port))
    while True:
        _, (ip, peer_port) = sock.recvfrom(2048)
        sock.sendto(f"{ip} {peer_port}\n".encode(), (ip, peer_port))
        print(f"{ip} {peer_port}", flush=True)


main()
