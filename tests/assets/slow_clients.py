"""Slow clients (slowloris): open N connections to HOST PORT, send each the start of an HTTP
request without ever finishing its headers, wait WAIT seconds, and print how many of them
the server has closed by then.

usage: slow_clients.py HOST PORT N WAIT
"""
import socket
import sys
import time


def main():
    host, port, count, wait = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    socks = []
    for _ in range(count):
        s = socket.create_connection((host, port), timeout=5)
        s.sendall(b"GET http://www.example.com/ HTTP/1.1\r\nHost: www.example.com\r\n")
        socks.append(s)
    time.sleep(wait)
    closed = 0
    for s in socks:
        s.settimeout(0.2)
        try:
            s.recv(1024)
            closed += 1  # EOF, or an error response before the close
        except socket.timeout:
            pass
        except OSError:
            closed += 1
        s.close()
    print(closed, flush=True)


main()
