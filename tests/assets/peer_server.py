"""Lab server: tells each client the peer address it saw.

usage: peer_server.py tcp|udp|echo|http ADDR PORT
       peer_server.py https ADDR PORT CERT KEY
tcp:   reads one line, replies "PEER_IP PEER_PORT\n", closes.
udp:   replies to each datagram with "PEER_IP PEER_PORT\n".
echo:  replies to every line with "PEER_IP PEER_PORT LOCAL_IP LINE\n" until the client
       closes; no idle timeout, so a connection can stay open and quiet as long as a test
       needs. LOCAL_IP is the server address the client reached.
http, https: HTTP/1.1 with keep-alive; every GET is answered 200 with the body
       "PEER_IP PEER_PORT HOST\n" (HOST from the Host header).
http10: HTTP/1.0 as old servers speak it: the same body, no Content-Length, the end of the
       body is the close of the connection.
Each peer is also printed to stdout, one per line. An IPv6 ADDR serves over IPv6.
"""
import http.server
import socket
import socketserver
import ssl
import sys


class Tcp(socketserver.StreamRequestHandler):
    def handle(self):
        self.rfile.readline()
        ip, port = self.client_address[:2]
        self.wfile.write(f"{ip} {port}\n".encode())
        print(f"{ip} {port}", flush=True)


class Echo(socketserver.StreamRequestHandler):
    def handle(self):
        ip, port = self.client_address[:2]
        local = self.request.getsockname()[0]
        print(f"{ip} {port}", flush=True)
        for line in self.rfile:
            self.wfile.write(f"{ip} {port} {local} ".encode() + line)
            self.wfile.flush()


class Http(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        ip, port = self.client_address[:2]
        body = f"{ip} {port} {self.headers.get('Host', '-')}\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        print(f"{ip} {port}", flush=True)

    def log_message(self, *args):
        pass


class Http10(Http):
    protocol_version = "HTTP/1.0"

    def do_GET(self):
        ip, port = self.client_address[:2]
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        self.wfile.write(f"{ip} {port} {self.headers.get('Host', '-')}\n".encode())
        print(f"{ip} {port}", flush=True)


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True
    request_queue_size = 128


class Server6(Server):
    address_family = socket.AF_INET6


class HttpServer6(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6


def main():
    kind, addr, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    # An IPv6 ADDR serves over IPv6.
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    tcp_server = Server6 if family == socket.AF_INET6 else Server
    http_server = HttpServer6 if family == socket.AF_INET6 else http.server.ThreadingHTTPServer
    if kind == "tcp":
        tcp_server((addr, port), Tcp).serve_forever()
    if kind == "echo":
        tcp_server((addr, port), Echo).serve_forever()
    if kind == "http10":
        server = http_server((addr, port), Http10)
        server.daemon_threads = True
        server.serve_forever()
    if kind in ("http", "https"):
        server = http_server((addr, port), Http)
        server.daemon_threads = True
        if kind == "https":
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(sys.argv[4], sys.argv[5])
            server.socket = context.wrap_socket(server.socket, server_side=True)
        server.serve_forever()
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.bind((addr, port))
    while True:
        _, peer = sock.recvfrom(2048)
        ip, peer_port = peer[:2]
        sock.sendto(f"{ip} {peer_port}\n".encode(), peer)
        print(f"{ip} {peer_port}", flush=True)


main()
