"""Data: the data sets (digits, CIFAR-10/100 from local files, image-folder trees), their array cache, and how a data
set is split among parties (IID, Dirichlet, class-disjoint, quantity skew) with the statistics of a split."""
