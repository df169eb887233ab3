# Written by bench/plots.py from bench/results; `make plots` writes it again.
set terminal svg size 860,460 dynamic noenhanced font 'Helvetica,12' background '#ffffff'
set output 'backup_restore.svg'
set title "Backup and restore of 1024 MB of data (MB/s, higher is better)"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set ylabel "MB/s (1 MB = 1,000,000 bytes)"
set yrange [0:928]
set grid ytics
set key top left
set xlabel "restic's restore was not measured (no bar).  backup.json: 2026-12-05T22:37:03Z, restore.json: 2026-12-05T22:36:05Z" font ',10'
plot 'backup_restore.dat' using 2:xtic(1) title "full backup" lc rgb '#3465a4', \
     '' using 3 title "restore" lc rgb '#f57900'
