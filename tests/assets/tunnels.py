"""CONNECT tunnels held open: open N tunnels through the proxy at HOST PORT to TARGET
(host:port) one after the other, keep them idle, and report. Prints one line: how many
tunnels were established (a 200 answer), then, after WAIT seconds of silence, how many of
those the proxy has closed.

usage: tunnels.py HOST PORT TARGET N WAIT
"""
import socket
import sys
import time


def main():
    host, port, target = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    count, wait = int(sys.argv[4]), float(sys.argv[5])
    established = []
    for _ in range(count):
        s = socket.create_connection((host, port), timeout=5)
        try:
            s.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
            answer = s.recv(1024)
        except OSError:
            answer = b""
        if answer.startswith(b"HTTP/1.1 200"):
            established.append(s)
        else:
            s.close()
    time.sleep(wait)
    closed = 0
    for s in established:
        s.settimeout(0.2)
        try:
            if s.recv(1024) == b"":
                closed += 1
        except socket.timeout:
            pass
        except OSError:
            closed += 1
        s.close()
    print(len(established), closed, flush=True)


main()
