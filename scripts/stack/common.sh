# Helpers shared by the stack scripts; source it, don't run it.

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

free_port() {  # $1 preferred port; any free loopback port when it is taken
  if port_free "$1"; then echo "$1"; return; fi
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

running() { [[ -f "$PIDFILE" ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }

# Resolves $DEST/pom.xml's runtime dependencies into $LIB (atomically), marks $STAMP done and
# prints $LIB. $1 names what is resolved, for the log.
resolve_into_lib() {
  echo "$(basename "$0"): resolving $1 into $LIB" >&2
  mvn -B -q -Dstyle.color=never -f "$DEST/pom.xml" dependency:copy-dependencies \
    -DoutputDirectory="$LIB.tmp" -DincludeScope=runtime >&2
  rm -rf "$LIB"
  mv "$LIB.tmp" "$LIB"
  date -u +%FT%TZ > "$STAMP"
  echo "$LIB"
}
