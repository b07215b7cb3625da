module mpgbench

go 1.19
