#!/usr/bin/env python3
"""Receives sd_notify datagrams on the socket path argv[1], appending each to argv[2]."""
import os
import socket
import sys

s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
with open(sys.argv[2], "a") as f:
    f.write("LISTENING\n")
    f.flush()
    while True:
        data = s.recv(4096)
        f.write(data.decode("utf-8", "replace").replace("\n", " | ") + "\n")
        f.flush()
