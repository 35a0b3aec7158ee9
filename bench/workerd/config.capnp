# workerd serving bench/workerd/hello.js (the baseline of bench/functions-js.sh).
# The script overrides the socket's address: --socket-addr http=127.0.0.1:PORT.
using Workerd = import "/workerd/workerd.capnp";

const config :Workerd.Config = (
  services = [ (name = "main", worker = .hello) ],
  sockets = [ (name = "http", address = "127.0.0.1:8787", http = (), service = "main") ],
);

const hello :Workerd.Worker = (
  modules = [ (name = "hello.js", esModule = embed "hello.js") ],
  compatibilityDate = "2025-09-01",
);
