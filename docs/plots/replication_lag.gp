# Written by bench/plots.py from bench/results; `make plots` writes it again.
set terminal svg size 860,460 dynamic noenhanced font 'Helvetica,12' background '#ffffff'
set output 'replication_lag.svg'
set title "Replication lag under a steady delivery load (2026-12-04T21:27:31Z)"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set ylabel "log generations not replayed"
set yrange [0:16]
set grid ytics
set key top left horizontal
set xlabel "This run kept no time series (bench/replication.py records lag_series from now on):\nquantiles over 15 s x 2 rounds of deliveries, sampled every 0.2 s" font ',10'
plot 'replication_lag.dat' using 2:xtic(1) title "median" lc rgb '#3465a4', \
     '' using 3 title "99th percentile" lc rgb '#f57900', \
     '' using 4 title "max (replay queue)" lc rgb '#cc0000'
