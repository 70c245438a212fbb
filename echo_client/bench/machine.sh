#!/usr/bin/env bash
# Prints the machine stamp every measurement in echo_client/README.md carries.
echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), kernel $(uname -r)"
echo "rustc: $(rustc --version 2>/dev/null || echo unknown)"
echo "load: $(cut -d' ' -f1-3 /proc/loadavg) (1, 5, 15 min: the machine is shared with other work)"
