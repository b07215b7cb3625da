module mpg/perf/servers/echo_server

go 1.19
