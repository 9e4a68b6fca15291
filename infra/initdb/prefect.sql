-- Prefect's own database beside MLflow's (run once by the postgres image on an empty volume)
CREATE DATABASE prefect;
