#!/bin/sh
# nginx answering at once with no logging, on 127.0.0.1:$1, files in $2 (issue 25's reference).
port=$1; dir=$2
mkdir -p "$dir/root"
echo ok > "$dir/root/index.html"
cat > "$dir/nginx.conf" <<CONF
worker_processes auto;
pid $dir/nginx.pid;
error_log $dir/error.log crit;
worker_rlimit_nofile 20000;
events { worker_connections 10000; }
http {
  access_log off;
  client_body_temp_path $dir/body;
  proxy_temp_path $dir/proxy;
  fastcgi_temp_path $dir/fastcgi;
  uwsgi_temp_path $dir/uwsgi;
  scgi_temp_path $dir/scgi;
  server { listen 127.0.0.1:$port reuseport; root $dir/root; location / { return 200 "ok\n"; } }
}
CONF
exec nginx -c "$dir/nginx.conf" -g 'daemon off;'
