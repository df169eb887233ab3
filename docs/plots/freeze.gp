# Written by bench/plots.py from bench/results; `make plots` writes it again.
set terminal svg size 860,460 dynamic noenhanced font 'Helvetica,12' background '#ffffff'
set output 'freeze.svg'
set title "Writes held during a shadow copy, by provider and data size (ms, log scale)"
set logscale y
set logscale x
set ylabel "freeze (ms): writes held"
set xrange [50:4000]
set yrange [0.5:5000]
set grid
set key top left font ',10'
set xlabel "data in the shadow copy (MB)\ncopy: writes held while every byte is copied; reflink, btrfs: a clone; held: page writes deferred" font ',10'
plot 'freeze.dat' index 0 using 1:2 with points pt 7 ps 1.4 lc rgb '#75507b' title 'btrfs (ombra vss, test writer)', 'freeze.dat' index 1 using 1:2 with points pt 7 ps 1.4 lc rgb '#cc0000' title 'copy (ombra vss, test writer)', 'freeze.dat' index 2 using 1:2 with points pt 7 ps 1.4 lc rgb '#4e9a06' title 'held (ombra vss, test writer)', 'freeze.dat' index 3 using 1:2 with points pt 7 ps 1.4 lc rgb '#3465a4' title 'reflink (ombra vss, test writer)', 'freeze.dat' index 4 using 1:2 with linespoints pt 5 ps 1.2 lw 2 lc rgb '#4e9a06' dt 2 title 'held (the store writer, live database)'
