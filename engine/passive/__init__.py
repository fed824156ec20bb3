"""Passive sonar: spectra (spectrograms, LOFARgrams, DEMON), beamforming of a hydrophone
array into bearing-time records, and bearings as world-frame rays."""
