-- wrk script: POST one customer to /predict.  wrk -t2 -c64 -d10s --latency -s benchmarks/predict.lua http://127.0.0.1:3000/predict
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"customer_id":"C1","age":42,"tenure_months":24,"monthly_charges":89.99,"total_charges":2159.76,"support_calls":3,"internet_service":"Fiber","contract":"Month-to-month","payment_method":"Electronic check"}'
