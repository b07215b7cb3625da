module mpg/perf/servers/http_server

go 1.19
